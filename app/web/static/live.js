// Following jobs live: one EventSource for many jobs, polling with Retry-After as fallback.

export function announce(text) {
  const region = document.getElementById("announcer");
  if (region) region.textContent = text;
}

export class JobFeed {
  // onJob(doc) is called for every change of a followed job until it is finished.
  constructor(onJob) {
    this.onJob = onJob;
    this.ids = new Set();
    this.source = null;
    this.polling = false;
  }

  follow(id) {
    this.ids.add(id);
    this.#reconnect();
  }

  #reconnect() {
    if (this.source) this.source.close();
    if (this.ids.size === 0 || this.polling) return;
    if (!("EventSource" in window)) return this.#poll();
    const url = "/status/events?ids=" + [...this.ids].map(encodeURIComponent).join(",");
    const source = new EventSource(url);
    this.source = source;
    source.addEventListener("job", (event) => this.#deliver(JSON.parse(event.data)));
    source.addEventListener("missing", (event) => this.ids.delete(JSON.parse(event.data).id));
    source.onerror = () => {
      // The server ends the stream once every job is finished; anything else: poll.
      source.close();
      if (this.ids.size > 0) this.#poll();
    };
  }

  #deliver(doc) {
    if (["done", "failed", "cancelled"].includes(doc.status)) this.ids.delete(doc.id);
    this.onJob(doc);
  }

  async #poll() {
    this.polling = true;
    while (this.ids.size > 0) {
      let wait = 1;
      for (const id of [...this.ids]) {
        try {
          const response = await fetch(`/status/${encodeURIComponent(id)}`);
          if (response.status === 404) { this.ids.delete(id); continue; }
          wait = Math.max(wait, Number(response.headers.get("Retry-After")) || 1);
          if (response.ok) this.#deliver(await response.json());
        } catch {
          wait = Math.max(wait, 5); // the server is away: try again later
        }
      }
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    }
    this.polling = false;
  }
}
