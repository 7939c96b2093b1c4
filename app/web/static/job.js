// The job page with JavaScript on: follow the job live, reload once it is finished (so
// the results render), and a Copy button for the SHA-256.
import { JobFeed, announce } from "./live.js";

const box = document.getElementById("job");
const statusText = document.getElementById("job-status");
const progressText = document.getElementById("job-progress-text");
const bar = document.getElementById("job-progress");

if (box && box.dataset.finished === "false") {
  const feed = new JobFeed((doc) => {
    statusText.textContent = doc.status;
    bar.value = doc.progress;
    progressText.textContent = ` · ${Math.round(doc.progress * 100)}%`;
    if (["done", "failed", "cancelled"].includes(doc.status)) {
      announce(`Job ${doc.status}`);
      window.location.reload();
    }
  });
  feed.follow(box.dataset.jobId);
}

for (const button of document.querySelectorAll("button.copy")) {
  button.hidden = false;
  button.addEventListener("click", async () => {
    const text = document.getElementById(button.dataset.copy).textContent;
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
    announce("SHA-256 copied");
  });
}
