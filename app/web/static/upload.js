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

// Files above the page's threshold go by tus (/files/): a dropped connection resumes from
// the server's offset instead of starting over. A small client of our own (POST, PATCH in
// chunks, HEAD after a network error): the pages load no third-party code.
const TUS = { "Tus-Resumable": "1.0.0" };
const TUS_CHUNK_BYTES = 4 * 1024 * 1024;
const TUS_RETRIES = 8;

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
  if (file.size > Number(form.dataset.tusThreshold)) {
    tusUpload(file, ui);
    return;
  }
  const xhr = new XMLHttpRequest();
  const started = performance.now();
  xhr.upload.onprogress = (event) => {
    if (event.lengthComputable) showProgress(ui, started, 0, event.loaded, event.total);
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

function showProgress(ui, started, resumedAt, loaded, total) {
  const seconds = (performance.now() - started) / 1000;
  const speed = (loaded - resumedAt) / Math.max(seconds, 0.001);
  const left = (total - loaded) / Math.max(speed, 1);
  ui.bar.value = loaded / Math.max(total, 1);
  ui.info.textContent = `${Math.round(ui.bar.value * 100)}% · ${formatBytes(speed)}/s · ${Math.ceil(left)} s left`;
}

function send(method, url, headers, body, onprogress) {
  // Resolves with the finished XHR whatever its status; rejects on a network error.
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    if (onprogress) xhr.upload.onprogress = onprogress;
    xhr.onload = () => resolve(xhr);
    xhr.onerror = () => reject(new Error("network"));
    xhr.onabort = () => reject(new Error("aborted"));
    send.current = xhr;
    xhr.send(body);
  });
}

function metadata(pairs) {
  const b64 = (text) => btoa(Array.from(new TextEncoder().encode(text), (b) => String.fromCharCode(b)).join(""));
  return Object.entries(pairs).map(([key, value]) => `${key} ${b64(value)}`).join(",");
}

async function tusUpload(file, ui) {
  let cancelled = false;
  let url = null;
  ui.cancel.onclick = () => {
    cancelled = true;
    if (send.current) send.current.abort();
    if (url) fetch(url, { method: "DELETE", headers: TUS }); // the server keeps nothing
    ui.row.classList.add("cancelled"); ui.info.textContent = "Cancelled"; ui.cancel.remove();
  };
  const meta = metadata({ filename: file.name, filetype: file.type || "application/octet-stream", processors: form.elements.processors.value });
  try {
    const created = await send("POST", "/files/", { ...TUS, "Upload-Length": String(file.size), "Upload-Metadata": meta, Accept: "application/json" });
    if (created.status !== 201) { onUploaded(ui, file, created); return; }
    url = created.getResponseHeader("Location");
    let offset = 0;
    let failures = 0;
    const started = performance.now();
    while (offset < file.size && !cancelled) {
      const from = offset;
      try {
        const patched = await send("PATCH", url, { ...TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(from), Accept: "application/json" },
          file.slice(from, from + TUS_CHUNK_BYTES), (event) => showProgress(ui, started, 0, from + event.loaded, file.size));
        if (patched.status === 204) { offset = Number(patched.getResponseHeader("Upload-Offset")); failures = 0; continue; }
        if (![409, 423, 503].includes(patched.status)) { onUploaded(ui, file, patched); return; }
      } catch (error) {
        if (cancelled) return;
      }
      failures += 1; // the connection dropped, or the offset moved: ask where the server is
      if (failures > TUS_RETRIES) throw new Error("gave up");
      ui.info.textContent = `Connection lost; resuming (attempt ${failures})…`;
      await new Promise((done) => setTimeout(done, Math.min(250 * 2 ** failures, 10000)));
      try {
        const head = await send("HEAD", url, TUS);
        if (head.status === 200) offset = Number(head.getResponseHeader("Upload-Offset"));
      } catch (error) { /* still down: the next round tries again */ }
    }
    if (cancelled) return;
    const jobId = url.split("/").pop();
    const status = await send("GET", `/status/${encodeURIComponent(jobId)}`, { Accept: "application/json" });
    onUploaded(ui, file, { status: status.status === 200 ? 202 : status.status, responseText: status.responseText, statusText: status.statusText });
  } catch (error) {
    if (!cancelled) fail(ui, "The connection to the server was lost.");
  }
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
