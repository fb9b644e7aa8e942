// polishd review page: decisions, the before/after slider, keyboard shortcuts, retries.
// Plain JavaScript, no build step. Text from the server is only ever set with textContent.
"use strict";

function csrf() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf(), "X-Reviewer": reviewer()},
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = {error: response.statusText}; }
  return {ok: response.ok, data: data};
}

function reviewer() {
  const input = document.getElementById("reviewer");
  return (input && input.value.trim()) || localStorage.getItem("polishd-reviewer") || "reviewer";
}

function say(text) {
  const said = document.getElementById("said");
  if (said) said.textContent = text;
}

async function decide(decision, variant) {
  const box = document.querySelector(".decide");
  if (!box) return;
  const reason = document.getElementById("reason").value;
  const body = {decision: decision, reason: reason};
  if (variant) body.variant = variant;
  const result = await post("/api/images/" + encodeURIComponent(box.dataset.image) + "/review", body);
  if (!result.ok) { say(result.data.error || "not recorded"); return; }
  const r = result.data.recorded;
  const item = document.createElement("li");
  item.textContent = r.at + " · " + r.who + " · " + r.decision + (r.variant ? " (" + r.variant + ")" : "") +
    (r.reason ? ": " + r.reason : "");
  const list = document.getElementById("decisions");
  const none = list.querySelector(".none");
  if (none) none.remove();
  list.appendChild(item);
  if (!variant) document.getElementById("state").textContent = decision === "approve" ? "approved" : "rejected";
  say((variant ? variant + ": " : "") + (decision === "approve" ? "approved" : "rejected"));
}

function slider() {
  const range = document.getElementById("slider");
  const clip = document.getElementById("before-clip");
  if (!range || !clip) return;
  const show = () => { clip.style.width = range.value + "%"; };
  range.addEventListener("input", show);
  show();
}

function loupe() {
  // The upscale at 1:1 under the pointer: at screen size an upscale looks like its source.
  const frame = document.getElementById("loupe-frame");
  const picture = document.getElementById("loupe-picture");
  const lens = document.getElementById("loupe");
  if (!frame || !picture || !lens) return;
  lens.style.backgroundImage = "url(\"" + picture.src + "\")";
  frame.addEventListener("mousemove", (event) => {
    const box = picture.getBoundingClientRect();
    const fx = (event.clientX - box.left) / box.width, fy = (event.clientY - box.top) / box.height;
    if (fx < 0 || fy < 0 || fx > 1 || fy > 1 || !picture.naturalWidth) { lens.hidden = true; return; }
    const half = lens.offsetWidth / 2 || 120;
    lens.hidden = false;
    lens.style.left = (event.clientX - box.left - half) + "px";
    lens.style.top = (event.clientY - box.top - half) + "px";
    lens.style.backgroundPosition = (half - fx * picture.naturalWidth) + "px " + (half - fy * picture.naturalHeight) + "px";
  });
  frame.addEventListener("mouseleave", () => { lens.hidden = true; });
}

function keys() {
  document.addEventListener("keydown", (event) => {
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || event.ctrlKey || event.metaKey || event.altKey) return;
    const go = (id) => { const a = document.getElementById(id); if (a) window.location = a.href; };
    if (event.key === "a") decide("approve");
    else if (event.key === "r") decide("reject");
    else if (event.key === "j") go("next");
    else if (event.key === "k") go("prev");
  });
}

function wire() {
  const who = document.getElementById("reviewer");
  if (who) {
    who.value = localStorage.getItem("polishd-reviewer") || "";
    who.addEventListener("change", () => localStorage.setItem("polishd-reviewer", who.value.trim()));
  }
  for (const button of document.querySelectorAll(".decide button")) {
    button.addEventListener("click", () => decide(button.dataset.decision));
  }
  for (const button of document.querySelectorAll(".variant-decision")) {
    button.addEventListener("click", () => decide(button.dataset.decision, button.dataset.variant));
  }
  for (const button of document.querySelectorAll("button.retry")) {
    button.addEventListener("click", async () => {
      const result = await post("/api/jobs/" + encodeURIComponent(button.dataset.job) + "/retry", {});
      button.textContent = result.ok ? "queued" : (result.data.message || result.data.error || "not queued");
      button.disabled = true;
    });
  }
  for (const box of document.querySelectorAll(".ab")) {
    for (const button of box.querySelectorAll("button.pick")) {
      button.addEventListener("click", async () => {
        const image = document.querySelector(".decide").dataset.image;
        const result = await post("/api/images/" + encodeURIComponent(image) + "/pick",
                                  {stage: box.dataset.stage, choice: button.dataset.token});
        if (!result.ok) { say(result.data.error || "not recorded"); return; }
        // The pick is made: now say which engine each candidate was.
        const names = {};
        for (const c of result.data.candidates) names[c.token] = c.choice;
        for (const figure of box.querySelectorAll("figure.candidate")) {
          const choice = names[figure.querySelector("button.pick").dataset.token];
          figure.querySelector(".engine").textContent = choice;
          figure.classList.toggle("picked", choice === result.data.recorded.choice);
        }
        say("picked " + result.data.recorded.choice);
      });
    }
  }
  const retryWith = document.getElementById("rw-go");
  if (retryWith) {
    retryWith.addEventListener("click", async () => {
      const settings = {};
      const prompt = document.getElementById("rw-prompt").value.trim();
      const strength = document.getElementById("rw-strength").value.trim();
      const variants = document.getElementById("rw-variants").value.trim();
      if (prompt || strength) {
        settings.inpaint = {};
        if (prompt) settings.inpaint.prompt = prompt;
        if (strength) settings.inpaint.strength = Number(strength);
      }
      if (variants) settings.outpaint = {variants: variants.split(",").map((v) => v.trim()).filter((v) => v)};
      const image = document.querySelector(".decide").dataset.image;
      const result = await post("/api/images/" + encodeURIComponent(image) + "/retry", {settings: settings});
      document.getElementById("rw-said").textContent = result.ok
        ? "queued as job #" + result.data.queued + "; this run is kept as " + result.data.previous_run
        : (result.data.error || "not queued");
    });
  }
  const login = document.getElementById("login");
  if (login) {
    login.addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = await post("/login", {token: document.getElementById("token").value});
      if (result.ok) window.location = "/"; else say(result.data.error || "not logged in");
    });
  }
  slider();
  loupe();
  keys();
}

document.addEventListener("DOMContentLoaded", wire);
