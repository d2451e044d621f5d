// The page of the object-removal service: plain DOM, fetch and FormData; no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
// a selection in image pixels: clicked points, a dragged box [x0, y0, x1, y1], or a painted mask (a canvas of
// the image's size: white = remove, drawn alongside the red overlay the user sees)
const state = { file: null, points: [], box: null, drag: null, painted: false, mask: null, resultUrl: null };

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return `Error ${response.status}: ${body.error ?? JSON.stringify(body)}`;
  } catch {
    return `Error ${response.status}: ${response.statusText}`;
  }
}

async function loadInfo() {
  const response = await fetch("/info", { headers: headers() });
  if (!response.ok) {
    $("model").textContent = "model information unavailable";
    showError(await errorOf(response));
    return;
  }
  showError("");
  const info = await response.json();
  const select = $("class");
  select.replaceChildren(new Option(`default classes (${info.default_classes.join(", ")})`, ""));
  for (const name of info.classes) select.add(new Option(name, name));
  $("expand").min = -info.limits.max_expand;
  $("expand").max = info.limits.max_expand;
  $("model").textContent = `model ${info.model.tag} · working resolution ${info.image_size} px · ` +
    `up to ${(info.limits.max_pixels / 1e6).toFixed(0)} megapixels`;
}

function drawMarkers() {
  const img = $("input");
  for (const marker of document.querySelectorAll(".marker")) marker.remove();
  for (const [x, y] of state.points) {
    const marker = document.createElement("span");
    marker.className = "marker";
    marker.style.left = `${(x / img.naturalWidth) * 100}%`;
    marker.style.top = `${(y / img.naturalHeight) * 100}%`;
    $("stage").append(marker);
  }
  $("points-count").textContent = [state.points.length ? `${state.points.length} point(s)` : "",
    state.box ? "a box" : "", state.painted ? "a painted mask" : ""].filter(Boolean).join(", ");
  const mark = $("boxmark"), box = state.drag ?? state.box;
  mark.hidden = !box;
  if (box) {
    const [x0, y0, x1, y1] = ordered(box);
    Object.assign(mark.style, { left: `${(x0 / img.naturalWidth) * 100}%`, top: `${(y0 / img.naturalHeight) * 100}%`,
      width: `${((x1 - x0) / img.naturalWidth) * 100}%`, height: `${((y1 - y0) / img.naturalHeight) * 100}%` });
  }
}

function ordered([xa, ya, xb, yb]) {
  return [Math.min(xa, xb), Math.min(ya, yb), Math.max(xa, xb), Math.max(ya, yb)];
}

function clearSelection() {
  state.points = [];
  state.box = null;
  state.drag = null;
  state.painted = false;
  const overlay = $("overlay"), img = $("input");
  overlay.width = img.naturalWidth || 1;  // resizing a canvas clears it
  overlay.height = img.naturalHeight || 1;
  state.mask = document.createElement("canvas");
  state.mask.width = overlay.width;
  state.mask.height = overlay.height;
  const context = state.mask.getContext("2d");
  context.fillStyle = "black";
  context.fillRect(0, 0, overlay.width, overlay.height);
  drawMarkers();
}

function tool() {
  return document.querySelector("input[name=tool]:checked").value;
}

function clearResult() {
  for (const id of ["mask", "result", "download"]) $(id).hidden = true;
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = null;
}

function onFile() {
  state.file = $("file").files[0] ?? null;
  clearResult();
  showError("");
  const img = $("input");
  if (img.src) URL.revokeObjectURL(img.src);
  img.hidden = $("overlay").hidden = !state.file;
  if (state.file) img.src = URL.createObjectURL(state.file);
  $("remove").disabled = !state.file;
  clearSelection();
}

function imagePoint(event) {
  // displayed size -> image pixels: the image is scaled to the panel's width
  const img = $("input");
  const box = img.getBoundingClientRect();
  const x = ((event.clientX - box.left) * img.naturalWidth) / box.width;
  const y = ((event.clientY - box.top) * img.naturalHeight) / box.height;
  return [Math.min(Math.max(x, 0), img.naturalWidth), Math.min(Math.max(y, 0), img.naturalHeight)];
}

function paint(from, to) {
  // one brush stroke segment, on the mask sent to the server (white on black) and on the overlay the user
  // sees (opaque red on a canvas shown translucent, so overlapping strokes do not darken)
  for (const [canvas, colour] of [[state.mask, "white"], [$("overlay"), "#ef4444"]]) {
    const context = canvas.getContext("2d");
    context.strokeStyle = colour;
    context.lineWidth = Number($("brush").value);
    context.lineCap = "round";
    context.beginPath();
    context.moveTo(...from);
    context.lineTo(...to);
    context.stroke();
  }
  state.painted = true;
}

function onPointerDown(event) {
  if (!state.file) return;
  event.preventDefault();
  $("overlay").setPointerCapture(event.pointerId);
  const at = imagePoint(event);
  if (tool() === "click") {
    state.points.push(at.map((v) => Math.round(v * 10) / 10));
  } else if (tool() === "box") {
    state.drag = [...at, ...at];
  } else {
    state.stroke = at;
    paint(at, at);
  }
  drawMarkers();
}

function onPointerMove(event) {
  if (state.drag) {
    state.drag = [state.drag[0], state.drag[1], ...imagePoint(event)];
    drawMarkers();
  } else if (state.stroke) {
    const at = imagePoint(event);
    paint(state.stroke, at);
    state.stroke = at;
    drawMarkers();
  }
}

function onPointerUp() {
  if (state.drag) {
    const [x0, y0, x1, y1] = ordered(state.drag).map(Math.round);
    state.box = x1 - x0 >= 2 && y1 - y0 >= 2 ? [x0, y0, x1, y1] : state.box;  // a click is not a box
    state.drag = null;
  }
  state.stroke = null;
  drawMarkers();
}

async function onRemove(event) {
  event.preventDefault();
  if (!state.file) return;
  const target = {};
  if ($("class").value) target.classes = [$("class").value];
  const form = new FormData();
  form.append("image", state.file);
  if (state.painted) {  // a painted mask is filled as painted: alone, with no points or box
    form.append("mask", await new Promise((done) => state.mask.toBlob(done, "image/png")), "mask.png");
  } else {
    if (state.points.length) target.points = state.points;
    if (state.box) target.box = state.box;
  }
  form.append("target", JSON.stringify(target));
  form.append("expand", $("expand").value);
  form.append("output", "json");
  $("remove").disabled = true;
  $("status").textContent = "removing…";
  showError("");
  try {
    const response = await fetch("/remove", { method: "POST", body: form, headers: headers() });
    if (!response.ok) {
      clearResult();
      showError(await errorOf(response));
      return;
    }
    const body = await response.json();
    $("mask").src = `data:image/png;base64,${body.mask}`;
    $("result").src = `data:image/png;base64,${body.image}`;
    const bytes = Uint8Array.from(atob(body.image), (c) => c.charCodeAt(0));
    clearResult();
    state.resultUrl = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    $("download").href = state.resultUrl;
    $("download").download = `${state.file.name.replace(/\.[^.]*$/, "")}-removed.png`;
    for (const id of ["mask", "result", "download"]) $(id).hidden = false;
    $("status").textContent = body.bbox
      ? `removed ${body.removed_pixels} pixels in box [${body.bbox.join(", ")}] of ${body.width}x${body.height}`
      : "nothing matched the target; the image is unchanged";
  } catch (err) {
    showError(`Request failed: ${err}`);
  } finally {
    $("remove").disabled = false;
    if ($("status").textContent === "removing…") $("status").textContent = "";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("file").addEventListener("change", onFile);
  $("overlay").addEventListener("pointerdown", onPointerDown);
  $("overlay").addEventListener("pointermove", onPointerMove);
  $("overlay").addEventListener("pointerup", onPointerUp);
  $("overlay").addEventListener("pointercancel", onPointerUp);
  $("input").addEventListener("load", clearSelection);
  $("clear").addEventListener("click", clearSelection);
  $("brush").addEventListener("input", () => { $("brush-value").textContent = `${$("brush").value} px`; });
  $("expand").addEventListener("input", () => { $("expand-value").textContent = `${$("expand").value} px`; });
  $("token").addEventListener("change", loadInfo);
  $("controls").addEventListener("submit", onRemove);
  loadInfo();
});
