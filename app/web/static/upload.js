// The upload page with JavaScript on: drop or pick files, one job each, an upload progress
// bar with speed and time left, Cancel, then the job followed live. Without JavaScript the
// plain form still posts and lands on the job page.
import { JobFeed, announce } from "./live.js";

const MESSAGES = {
  413: "This file is larger than the server accepts.",
  415: "The server could not read this upload as a form.",
  503: "The server is busy. Try again in a moment.",
  507: "The server has no room for this file right now.",
};

const form = document.getElementById("upload-form");
const list = document.getElementById("uploads");
const picker = document.getElementById("file");
const dropzone = document.getElementById("dropzone");
const rows = new Map(); // job id -> row
const feed = new JobFeed(showJob);

function formatBytes(n) {
  const units = ["bytes", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function makeRow(file) {
  const row = document.createElement("li");
  row.className = "upload-row";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = file.name; // text, never HTML: names come from the user
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute("aria-label", `Upload of ${file.name}`);
  const info = document.createElement("span");
  info.className = "info";
  info.textContent = formatBytes(file.size);
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.textContent = "Cancel";
  row.append(name, bar, info, cancel);
  list.append(row);
  return { row, bar, info, cancel };
}

function upload(file) {
  const ui = makeRow(file);
  const maxBytes = Number(form.dataset.maxBytes);
  if (file.size > maxBytes) {
    fail(ui, `${MESSAGES[413]} The limit is ${formatBytes(maxBytes)}.`);
    return;
  }
  const xhr = new XMLHttpRequest();
  const started = performance.now();
  xhr.upload.onprogress = (event) => {
    if (!event.lengthComputable) return;
    const seconds = (performance.now() - started) / 1000;
    const speed = event.loaded / Math.max(seconds, 0.001);
    const left = (event.total - event.loaded) / Math.max(speed, 1);
    ui.bar.value = event.loaded / event.total;
    ui.info.textContent = `${Math.round(ui.bar.value * 100)}% · ${formatBytes(speed)}/s · ${Math.ceil(left)} s left`;
  };
  xhr.onload = () => onUploaded(ui, file, xhr);
  xhr.onerror = () => fail(ui, "The connection to the server was lost.");
  xhr.onabort = () => { ui.row.classList.add("cancelled"); ui.info.textContent = "Cancelled"; ui.cancel.remove(); };
  ui.cancel.onclick = () => xhr.abort();
  const processors = form.elements.processors.value;
  xhr.open("POST", `/uploads?processors=${encodeURIComponent(processors)}`);
  xhr.setRequestHeader("Accept", "application/json");
  const body = new FormData();
  body.append("file", file, file.name);
  xhr.send(body);
}

function onUploaded(ui, file, xhr) {
  ui.cancel.remove();
  let doc = {};
  try { doc = JSON.parse(xhr.responseText); } catch { /* not JSON: use the status text */ }
  if (xhr.status !== 202) {
    fail(ui, MESSAGES[xhr.status] ? `${MESSAGES[xhr.status]} ${doc.detail || ""}` : doc.detail || xhr.statusText);
    return;
  }
  ui.bar.value = 1;
  const link = document.createElement("a");
  link.href = `/jobs/${encodeURIComponent(doc.id)}`;
  link.textContent = "job page";
  ui.row.append(link);
  rows.set(doc.id, ui);
  showJob(doc);
  feed.follow(doc.id);
}

function showJob(doc) {
  const ui = rows.get(doc.id);
  if (!ui) return;
  ui.row.dataset.status = doc.status;
  if (doc.status === "done") {
    ui.bar.value = 1;
    ui.info.textContent = "done";
    const thumb = (doc.artifacts || []).find((a) => a.name === "thumbnail.webp");
    if (thumb && !ui.row.querySelector("img")) {
      const img = document.createElement("img");
      img.src = thumb.url;
      img.alt = `Thumbnail of ${doc.filename}`;
      img.className = "row-thumb";
      ui.row.append(img);
    }
    announce(`${doc.filename}: done`);
  } else if (doc.status === "failed") {
    fail(ui, doc.error ? doc.error.message : "Processing failed.");
  } else {
    ui.bar.value = doc.progress;
    ui.info.textContent = `${doc.status} · ${Math.round(doc.progress * 100)}%`;
  }
}

function fail(ui, message) {
  ui.row.dataset.status = "failed";
  ui.info.textContent = message;
  ui.cancel.remove();
  announce(message);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  [...picker.files].forEach(upload);
  form.reset();
});
picker.required = false; // with JavaScript, files may also come from a drop
for (const name of ["dragenter", "dragover"]) {
  dropzone.addEventListener(name, (event) => { event.preventDefault(); dropzone.classList.add("over"); });
}
dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropzone.classList.remove("over");
  [...event.dataTransfer.files].forEach(upload);
});
