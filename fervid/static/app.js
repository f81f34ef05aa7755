// fervid web page: upload an image or stream webcam frames to /v1/predict and draw the answer.
// Plain browser JavaScript, no build step. The server does all recognition; this only draws its JSON.
"use strict";

// Class colours come from /v1/model (fervid.draw's), so the page matches annotated images.
let COLOURS = {};
const colour = (emotion) => COLOURS[emotion] || "#888888";
// Black or white text, whichever reads better on a "#rrggbb" background.
function inkOn(hex) {
  const n = parseInt(hex.slice(1), 16);
  const lum = 0.299 * (n >> 16) + 0.587 * ((n >> 8) & 255) + 0.114 * (n & 255);
  return lum > 140 ? "#000" : "#fff";
}
const pct = (p) => `${Math.round(p * 100)}%`;
const $ = (id) => document.getElementById(id);

function setStatus(text, state) {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = state;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

// Boxes and labels, scaled so they read the same on a 300 px and a 4000 px image.
function drawFaces(ctx, faces, sx = 1, sy = 1) {
  const unit = Math.max(2, Math.round(Math.max(ctx.canvas.width, ctx.canvas.height) / 300));
  ctx.lineWidth = unit;
  ctx.font = `600 ${unit * 7}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  faces.forEach((f, i) => {
    const [x, y, w, h] = [f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy];
    const c = colour(f.emotion);
    ctx.strokeStyle = c;
    ctx.strokeRect(x, y, w, h);
    const label = `${i + 1}: ${f.emotion} ${pct(f.confidence)}`;
    const tw = ctx.measureText(label).width + unit * 3;
    const th = unit * 9;
    const ty = y - th >= 0 ? y : y + h + th;  // above the box, or below it at the top edge
    ctx.fillStyle = c;
    ctx.fillRect(x - unit / 2, ty - th, tw, th);
    ctx.fillStyle = inkOn(c);
    ctx.fillText(label, x + unit, ty - unit);
  });
}

// One card per face: its label and a bar per class, highest first.
function listFaces(faces) {
  const list = $("faces");
  list.replaceChildren();
  faces.forEach((f, i) => {
    const li = document.createElement("li");
    li.className = "face";
    li.dataset.emotion = f.emotion;
    li.style.setProperty("--c", colour(f.emotion));
    const h = document.createElement("h3");
    h.className = "label";
    h.textContent = `Face ${i + 1}: ${f.emotion} ${pct(f.confidence)}`;
    li.append(h);
    Object.entries(f.probabilities).sort((a, b) => b[1] - a[1]).forEach(([name, p]) => {
      const row = document.createElement("div");
      row.className = name === f.emotion ? "bar top" : "bar";
      row.dataset.emotion = name;
      const label = document.createElement("span");
      label.textContent = name;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      fill.style.width = `${(p * 100).toFixed(1)}%`;
      fill.style.setProperty("--c", colour(name));
      track.append(fill);
      const value = document.createElement("span");
      value.className = "pct";
      value.textContent = pct(p);
      row.append(label, track, value);
      li.append(row);
    });
    list.append(li);
  });
}

function describe(data) {
  const n = data.faces.length;
  const t = data.timing;
  return `${n} face${n === 1 ? "" : "s"} found in ${data.width}x${data.height} ` +
    `(decode ${t.decode_ms} ms, inference ${t.inference_ms} ms, total ${t.total_ms} ms)`;
}

// ---- image mode ------------------------------------------------------------------------
async function handleFile(file) {
  if (!file) return;
  setStatus(`Recognising ${file.name}...`, "busy");
  $("faces").replaceChildren();
  const form = new FormData();
  form.append("file", file, file.name);
  let data;
  try {
    const response = await fetch("/v1/predict", { method: "POST", body: form });
    if (!response.ok) {
      setStatus(`Error: ${await errorText(response)}`, "error");
      return;
    }
    data = await response.json();
  } catch (e) {
    setStatus(`Error: the server cannot be reached (${e.message})`, "error");
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);  // applies EXIF orientation, as the server's decoder does
  } catch (e) {
    bitmap = null;  // e.g. TIFF, which browsers do not decode: show the results without the picture
  }
  const stage = $("image-stage");
  const canvas = $("canvas");
  if (bitmap) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    drawFaces(ctx, data.faces, bitmap.width / data.width, bitmap.height / data.height);
    canvas.dataset.loaded = "1";
    stage.hidden = false;
  } else {
    stage.hidden = true;
  }
  listFaces(data.faces);
  setStatus(describe(data), "done");
}

function setupImage() {
  const input = $("file");
  const drop = $("drop");
  input.addEventListener("change", () => handleFile(input.files[0]));
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault();
    drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => handleFile(e.dataTransfer.files[0]));
}

// ---- webcam mode -----------------------------------------------------------------------
const cam = { stream: null, timer: null, busy: false, grab: document.createElement("canvas") };

async function sendFrame() {
  const video = $("cam-video");
  if (cam.busy || !video.videoWidth) return;  // one request in flight: never queue frames up
  cam.busy = true;
  try {
    cam.grab.width = video.videoWidth;
    cam.grab.height = video.videoHeight;
    cam.grab.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((resolve) => cam.grab.toBlob(resolve, "image/jpeg", 0.85));
    const response = await fetch("/v1/predict", { method: "POST", body: blob,
      headers: { "Content-Type": "image/jpeg" } });
    if (!response.ok) {
      setStatus(`Error: ${await errorText(response)}`, "error");
      return;
    }
    const data = await response.json();
    if (!cam.stream) return;  // stopped while the request was out
    const overlay = $("cam-overlay");
    overlay.width = video.videoWidth;
    overlay.height = video.videoHeight;
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    drawFaces(ctx, data.faces);
    listFaces(data.faces);
    setStatus(`Live: ${describe(data)}`, "live");
  } catch (e) {
    setStatus(`Error: ${e.message}`, "error");
  } finally {
    cam.busy = false;
  }
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("Error: this browser gives no camera access here (it needs https or localhost)", "error");
    return;
  }
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    setStatus(`Error: no camera (${e.name}: ${e.message})`, "error");
    return;
  }
  $("cam-video").srcObject = cam.stream;
  $("cam-start").disabled = true;
  $("cam-stop").disabled = false;
  const rate = Number($("cam-rate").value) || 4;
  cam.timer = setInterval(sendFrame, 1000 / rate);
  setStatus("Camera on: sending frames...", "live");
}

function stopCamera() {
  clearInterval(cam.timer);
  cam.timer = null;
  if (cam.stream) cam.stream.getTracks().forEach((t) => t.stop());
  cam.stream = null;
  $("cam-video").srcObject = null;
  const overlay = $("cam-overlay");
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  $("cam-start").disabled = false;
  $("cam-stop").disabled = true;
  setStatus("Camera off.", "idle");
}

function setMode(mode) {
  const webcam = mode === "webcam";
  $("image-panel").hidden = webcam;
  $("webcam-panel").hidden = !webcam;
  $("image-stage").hidden = webcam || !$("canvas").dataset.loaded;
  $("cam-stage").hidden = !webcam;
  $("mode-image").classList.toggle("active", !webcam);
  $("mode-webcam").classList.toggle("active", webcam);
  $("mode-image").setAttribute("aria-pressed", String(!webcam));
  $("mode-webcam").setAttribute("aria-pressed", String(webcam));
  $("faces").replaceChildren();
  if (!webcam && cam.stream) stopCamera();
  setStatus(webcam ? "Start the camera to see live labels." : "Choose an image to start.", "idle");
}

async function showModel() {
  try {
    const response = await fetch("/v1/model");
    if (!response.ok) return;
    const m = await response.json();
    COLOURS = m.colors || {};
    const acc = typeof m.accuracy === "number" ? `, validation accuracy ${pct(m.accuracy)}` : "";
    $("model-info").textContent = `Model: ${m.arch} (${m.classes.length} classes${acc}).`;
  } catch (e) { /* the page still works without it */ }
}

document.addEventListener("DOMContentLoaded", () => {
  setupImage();
  $("cam-start").addEventListener("click", startCamera);
  $("cam-stop").addEventListener("click", stopCamera);
  $("mode-image").addEventListener("click", () => setMode("image"));
  $("mode-webcam").addEventListener("click", () => setMode("webcam"));
  showModel();
});
