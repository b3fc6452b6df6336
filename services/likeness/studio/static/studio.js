// Likeness Studio: progressive enhancement of server-rendered pages. Every page works without this file;
// with it, search is instant, results scroll on, photos can be dropped, jobs update live and generations
// stream their previews. Text from the services is only ever set with textContent, never as markup.
"use strict";

const csrf = () => document.body.dataset.csrf || "";

function banner(message) {
  const element = document.getElementById("banner");
  if (!element) return;
  element.textContent = message;
  element.hidden = !message;
}

async function fetchText(url, options = {}, attempts = 3) {
  for (let attempt = 1; ; attempt++) {
    try {
      const response = await fetch(url, { credentials: "same-origin", ...options });
      if (response.status === 401) { window.location.assign("/signin?next=" + encodeURIComponent(location.pathname + location.search)); return null; }
      if (response.status === 503 && attempt < attempts) throw new Error("unavailable");
      banner("");
      return response;
    } catch (error) {
      if (attempt >= attempts) { banner("The Likeness services cannot be reached; retrying when you try again."); return null; }
      banner("The Likeness services are unavailable; retrying…");
      await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
    }
  }
}

// ---- Discover: instant search and infinite scroll ------------------------------------------------------

function discover() {
  const input = document.getElementById("q");
  const results = document.getElementById("results");
  if (!input || !results) return;
  let timer = 0;
  let generation = 0;
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) if (entry.isIntersecting) loadMore(entry.target);
  }, { rootMargin: "400px" });
  // The next page loads once the reader scrolls towards it, never on arrival: a first visit costs one page.
  let scrolled = false;

  function watchMore() {
    const more = document.getElementById("more");
    if (more && scrolled) observer.observe(more);
  }
  window.addEventListener("scroll", () => { if (!scrolled) { scrolled = true; watchMore(); } }, { passive: true });

  async function loadMore(more) {
    observer.unobserve(more);
    const mine = generation;
    const response = await fetchText(more.dataset.next);
    if (!response || mine !== generation) return;
    const html = await response.text();
    const page = new DOMParser().parseFromString(html, "text/html");
    const grid = results.querySelector(".grid");
    for (const card of page.querySelectorAll(".card")) grid.appendChild(document.adoptNode(card));
    more.remove();
    const next = page.getElementById("more");
    if (next) { results.appendChild(document.adoptNode(next)); watchMore(); }
  }

  async function search() {
    const query = input.value;
    const mine = ++generation;
    const response = await fetchText("/discover/results?q=" + encodeURIComponent(query));
    if (!response || mine !== generation) return;
    const html = await response.text();
    const page = new DOMParser().parseFromString(html, "text/html");
    results.replaceChildren(...Array.from(page.body.childNodes, (node) => document.adoptNode(node)));
    results.dataset.query = query;
    history.replaceState(null, "", query ? "/discover?q=" + encodeURIComponent(query) : "/discover");
    watchMore();
  }

  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(search, 120); });
  document.getElementById("search").addEventListener("submit", (event) => { event.preventDefault(); clearTimeout(timer); search(); });
  watchMore();
}

// ---- Prompt detail: copy -------------------------------------------------------------------------------

function copyButton() {
  const button = document.getElementById("copy");
  if (!button) return;
  button.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(button.dataset.copy); button.textContent = "Copied"; }
    catch { button.textContent = "Select the text to copy it"; }
  });
}

// ---- New subject: drag and drop ------------------------------------------------------------------------

function dropzone() {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("photos");
  const chosen = document.getElementById("chosen");
  if (!zone || !input) return;
  const show = () => { chosen.textContent = input.files.length ? input.files.length + " photo(s) chosen" : ""; };
  input.addEventListener("change", show);
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = new DataTransfer();
    for (const file of event.dataTransfer.files) files.items.add(file);
    input.files = files.files;
    show();
  });
}

// ---- Job: live state, progress, loss chart, validation images ------------------------------------------

function jobView() {
  const section = document.getElementById("job");
  if (!section) return;
  const losses = [];
  const text = (id, value) => { const element = document.getElementById(id); if (element) element.textContent = value; };
  const polyline = document.querySelector("#loss polyline");
  function drawLoss() {
    if (losses.length < 2) return;
    const top = Math.max(...losses.map((p) => p[1])), bottom = Math.min(...losses.map((p) => p[1]));
    const last = losses[losses.length - 1][0], first = losses[0][0];
    polyline.setAttribute("points", losses.map(([step, loss]) =>
      `${(300 * (step - first)) / Math.max(1, last - first)},${78 - (76 * (loss - bottom)) / Math.max(1e-9, top - bottom)}`).join(" "));
  }
  const source = new EventSource(section.dataset.events);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "state_changed") {
      text("state", event.state);
      text("message", event.message || "");
      if (["succeeded", "failed", "cancelled"].includes(event.state)) {
        const cancel = document.getElementById("cancel");
        if (cancel) cancel.remove();
      }
    } else if (event.type === "progress") {
      const progress = document.getElementById("progress");
      progress.max = event.total || 1;
      progress.value = event.step;
      text("steps", `${event.step} / ${event.total}`);
      text("loss-value", event.loss.toFixed(4));
      text("eta", event.eta > 0 ? Math.round(event.eta) + " s" : "–");
      losses.push([event.step, event.loss]);
      drawLoss();
    } else if (event.type === "validation_images") {
      const box = document.getElementById("validation");
      for (const src of event.images) {
        const image = new Image();
        image.src = src;
        image.alt = "Validation image at step " + event.step;
        box.appendChild(image);
      }
    } else if (event.type === "succeeded") {
      const link = document.getElementById("generate-with");
      link.href = "/generate?subject=" + encodeURIComponent(event.model_id);
      document.getElementById("done").hidden = false;
    }
  };
  source.addEventListener("end", () => source.close());
  source.addEventListener("failure", (message) => { source.close(); banner(JSON.parse(message.data).error); });
  source.onerror = () => banner("Lost the job's live updates; reconnecting…");
  source.onopen = () => banner("");
}

// ---- Generate: streamed previews and images -------------------------------------------------------------

function generateForm() {
  const form = document.getElementById("generate");
  if (!form) return;
  const status = document.getElementById("gen-status");
  const previews = document.getElementById("previews");
  const images = document.getElementById("images");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "Queued…";
    previews.replaceChildren();
    images.replaceChildren();
    const response = await fetchText(form.dataset.stream, {
      method: "POST", body: new FormData(form), headers: { "X-CSRF-Token": csrf() },
    }, 1);
    if (!response) { status.textContent = ""; return; }
    if (!response.ok) { status.textContent = "The request was refused (" + response.status + ")."; return; }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line) show(JSON.parse(line));
      }
    }
  });
  function show(event) {
    if (event.type === "progress") {
      status.textContent = `Step ${event.step} of ${event.total}`;
      if (event.preview) {
        const image = previews.querySelector("img") || previews.appendChild(new Image());
        image.src = event.preview;
        image.alt = "Preview";
      }
    } else if (event.type === "image") {
      const figure = document.createElement("figure");
      const image = new Image(event.width, event.height);
      image.className = "generated";
      image.src = event.src;
      image.alt = "Generated image, seed " + event.seed;
      const caption = document.createElement("figcaption");
      caption.textContent = `seed ${event.seed} · ${event.width}×${event.height}`;
      if (event.gallery_prompt_id) {
        const link = document.createElement("a");
        link.href = "/prompts/" + encodeURIComponent(event.gallery_prompt_id);
        link.textContent = " · in the gallery";
        caption.appendChild(link);
      }
      figure.append(image, caption);
      images.appendChild(figure);
    } else if (event.type === "warning") {
      status.textContent = event.message;
    } else if (event.type === "error") {
      status.textContent = event.message;
      status.className = "error";
    } else if (event.type === "done") {
      status.textContent = "Done.";
      previews.replaceChildren();
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  discover();
  copyButton();
  dropzone();
  jobView();
  generateForm();
});
