// The page of the object-removal service: plain DOM, fetch and FormData; no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, points: [], resultUrl: null };

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
  $("points-count").textContent = state.points.length ? `${state.points.length} point(s)` : "";
}

function clearResult() {
  for (const id of ["mask", "result", "download"]) $(id).hidden = true;
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = null;
}

function onFile() {
  state.file = $("file").files[0] ?? null;
  state.points = [];
  clearResult();
  showError("");
  const img = $("input");
  if (img.src) URL.revokeObjectURL(img.src);
  img.hidden = !state.file;
  if (state.file) img.src = URL.createObjectURL(state.file);
  $("remove").disabled = !state.file;
  drawMarkers();
}

function onClick(event) {
  // displayed size -> image pixels: the image is scaled to the panel's width
  const img = $("input");
  const box = img.getBoundingClientRect();
  const x = ((event.clientX - box.left) * img.naturalWidth) / box.width;
  const y = ((event.clientY - box.top) * img.naturalHeight) / box.height;
  state.points.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
  drawMarkers();
}

async function onRemove(event) {
  event.preventDefault();
  if (!state.file) return;
  const target = {};
  if ($("class").value) target.classes = [$("class").value];
  if (state.points.length) target.points = state.points;
  const form = new FormData();
  form.append("image", state.file);
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
  $("input").addEventListener("click", onClick);
  $("input").addEventListener("load", drawMarkers);
  $("clear").addEventListener("click", () => { state.points = []; drawMarkers(); });
  $("expand").addEventListener("input", () => { $("expand-value").textContent = `${$("expand").value} px`; });
  $("token").addEventListener("change", loadInfo);
  $("controls").addEventListener("submit", onRemove);
  loadInfo();
});
