"""TFLite variants: litert-torch conversion, ai-edge-quantizer quantisation, flatbuffer edits, fallback."""
