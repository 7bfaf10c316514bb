// The page uses only the HTTP API. The token stays in this tab (sessionStorage); the MJPEG <img>
// and the EventSource ride on the session cookie the token was traded for (GET requests only).
"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("edge-token") || "";
let source = null;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

async function api(path, options = {}) {
  const headers = Object.assign({Authorization: "Bearer " + token}, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, {headers}));
  const type = resp.headers.get("content-type") || "";
  const body = type.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const err = new Error((body && body.error) || resp.statusText);
    err.body = body;
    err.status = resp.status;
    throw err;
  }
  return body;
}

async function signIn(candidate) {
  const resp = await fetch("/api/session", {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify({token: candidate})});
  if (!resp.ok) throw new Error((await resp.json()).error || "sign-in failed");
  token = candidate;
  sessionStorage.setItem("edge-token", token);
  $("login").hidden = true;
  $("app").hidden = false;
  $("status").textContent = "signed in";
  start();
}

function start() {
  $("live").src = "/api/stream.mjpg";
  connectEvents();
  loadPeople();
  loadAttempts();
  loadRelease();
  loadBench();
  setInterval(loadLive, 2000);
}

async function loadLive() {
  try {
    const m = await api("/api/metrics");
    const live = await api("/api/live");
    $("live-info").textContent = `${(m.fps ?? 0).toFixed(1)} fps, ${live.detections.length} objects, frame ${live.frame_index ?? "-"}`;
  } catch (e) { $("live-info").textContent = e.message; }
}

function addEvent(e) {
  const li = document.createElement("li");
  li.className = "event";
  li.dataset.label = e.class_name;
  li.dataset.zone = e.zone;
  const when = new Date(e.time * 1000).toLocaleTimeString();
  li.innerHTML = (e.snapshot ? `<img src="${esc(e.snapshot)}" alt="snapshot">` : "") +
    `<span>${esc(when)}</span><b>${esc(e.event_type)}</b><span>${esc(e.class_name)} #${esc(e.track_id)}</span>` +
    `<span>zone ${esc(e.zone)}</span><span>${Number(e.score).toFixed(2)}</span>`;
  const list = $("events");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 200) list.removeChild(list.lastChild);
}

async function connectEvents() {
  if (source) source.close();
  $("events").innerHTML = "";
  const q = new URLSearchParams();
  if ($("filter-label").value) q.set("label", $("filter-label").value);
  if ($("filter-zone").value) q.set("zone", $("filter-zone").value);
  try {
    const recent = await api("/api/events?" + q.toString() + "&limit=50");
    recent.events.forEach(addEvent);
  } catch (e) { /* the stream below still works */ }
  source = new EventSource("/api/events/stream?" + q.toString());
  source.addEventListener("detection", (m) => addEvent(JSON.parse(m.data)));
}

function showVerdicts(result, failed) {
  const rows = (result.verdicts || []).map((v) => {
    const good = v.verdict === "kept" || v.verdict === "usable";
    const why = [...(v.quality_reasons || [])].join(", ");
    return `<li class="${good ? "verdict-kept" : "verdict-bad"}">${esc(v.photo)}: ${esc(v.verdict)}` +
      `${why ? " (" + esc(why) + ")" : ""}${v.liveness_score != null ? ", liveness " + Number(v.liveness_score).toFixed(2) : ""}</li>`;
  }).join("");
  const head = failed ? `<p class="error">${esc(result.error)}</p>`
                      : `<p class="ok">Enrolled ${esc(result.user)}: ${esc(result.templates)} templates</p>`;
  $("enrol-result").innerHTML = head + `<ul id="verdicts">${rows}</ul>`;
}

async function enrolPhotos(ev) {
  ev.preventDefault();
  const form = new FormData();
  for (const f of $("enrol-photos").files) form.append("photos", f, f.name);
  form.append("mode", $("enrol-mode").value);
  $("enrol-result").textContent = "enrolling…";
  try {
    showVerdicts(await api(`/api/faces/${encodeURIComponent($("enrol-name").value)}/photos`, {method: "POST", body: form}), false);
  } catch (e) {
    showVerdicts(Object.assign({error: e.message}, e.body || {}), true);
  }
  loadPeople();
  loadAttempts();
}

async function enrolCamera() {
  $("enrol-result").textContent = "look at the camera…";
  try {
    const body = JSON.stringify({seconds: 10, mode: $("enrol-mode").value});
    showVerdicts(await api(`/api/faces/${encodeURIComponent($("enrol-name").value)}/camera`,
                           {method: "POST", body, headers: {"Content-Type": "application/json"}}), false);
  } catch (e) { showVerdicts(Object.assign({error: e.message}, e.body || {}), true); }
  loadPeople();
}

async function recognise(ev) {
  ev.preventDefault();
  const form = new FormData();
  const file = $("recognize-photo").files[0];
  if (!file) return;
  form.append("image", file, file.name);
  try {
    const r = await api("/api/recognize", {method: "POST", body: form});
    $("recognize-result").innerHTML = r.faces.map((f) => `<li class="face">${f.user ? esc(f.user) : "unknown"}` +
      `${f.similarity != null ? " (similarity " + f.similarity.toFixed(3) + ", threshold " + r.threshold.toFixed(3) + ")" : ""}` +
      `${f.live === false ? " — not live" : ""}</li>`).join("") || "<li>no face</li>";
  } catch (e) { $("recognize-result").innerHTML = `<li class="error">${esc(e.message)}</li>`; }
  loadAttempts();
}

async function loadPeople() {
  const tbody = $("people").querySelector("tbody");
  try {
    const data = await api("/api/faces");
    tbody.innerHTML = "";
    for (const u of data.users) {
      const tr = document.createElement("tr");
      tr.className = "person";
      tr.innerHTML = `<td class="name">${esc(u.user)}</td><td>${esc(u.templates)}</td>` +
        `<td>${esc(u.model_id)}${u.stale ? " (stale: re-enrol)" : ""}</td>` +
        `<td><button class="rename">Rename</button> <button class="remove">Remove</button></td>`;
      tr.querySelector(".rename").onclick = async () => {
        const name = prompt("New name for " + u.user, u.user);
        if (name && name !== u.user) {
          await api(`/api/faces/${encodeURIComponent(u.user)}`, {method: "PATCH", body: JSON.stringify({name}),
                                                                  headers: {"Content-Type": "application/json"}});
          loadPeople();
        }
      };
      tr.querySelector(".remove").onclick = async () => {
        if (confirm("Remove " + u.user + "?")) {
          await api(`/api/faces/${encodeURIComponent(u.user)}`, {method: "DELETE"});
          loadPeople();
        }
      };
      tbody.appendChild(tr);
    }
  } catch (e) { tbody.innerHTML = `<tr><td colspan="4" class="error">${esc(e.message)}</td></tr>`; }
}

async function loadAttempts() {
  const tbody = $("attempts").querySelector("tbody");
  try {
    const data = await api("/api/attempts?limit=20");
    tbody.innerHTML = data.attempts.map((a) => `<tr><td>${esc(a.time)}</td><td>${esc(a.action)}</td>` +
      `<td>${esc(a.user)}</td><td>${esc(a.decision)}</td><td>${esc(a.reason)}</td></tr>`).join("");
  } catch (e) { tbody.innerHTML = `<tr><td colspan="5" class="error">${esc(e.message)}</td></tr>`; }
}

async function loadRelease() {
  try { $("release").textContent = JSON.stringify(await api("/api/release"), null, 2); }
  catch (e) { $("release").textContent = e.message; }
}

async function loadBench() {
  try {
    const b = await api("/api/bench");
    const rows = b.rows.map((r) => `<tr><td>${esc(r.variant)}</td><td>${esc(r.backend)}</td><td>${esc(r.threads)}</td>` +
      `<td>${esc(r.p50_ms)}</td><td>${esc(r.p90_ms)}</td><td>${esc(r.ips)}</td></tr>`).join("");
    $("bench").innerHTML = `<p>${esc(b.created)}</p><table><tr><th>Variant</th><th>Backend</th><th>Threads</th>` +
      `<th>p50 ms</th><th>p90 ms</th><th>img/s</th></tr>${rows}</table>` +
      b.charts.map((c) => `<img src="${esc(c)}" alt="chart">`).join("");
  } catch (e) { $("bench").textContent = e.message; }
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { await signIn($("token").value); } catch (e) { $("login-error").textContent = e.message; }
});
$("enrol-form").addEventListener("submit", enrolPhotos);
$("enrol-camera").addEventListener("click", enrolCamera);
$("recognize-form").addEventListener("submit", recognise);
$("apply-filters").addEventListener("click", connectEvents);
if (token) signIn(token).catch(() => sessionStorage.removeItem("edge-token"));
