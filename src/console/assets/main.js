// The dispatch console, as trunkd serves it at /console/.
//
// - api.js: the operator's session (login, tokens refreshed before expiry, logout) and
//   the API's requests and errors.
// - stream.js: the event stream, resumed after a drop from the last event seen.
// - model.js: the live system, from the stream's snapshot and events.
// - views.js, units.js, records.js: what a dispatcher sees and does; dom.js: how they
//   build the page.
//
// The page shows and offers what the operator's role allows; the API checks every
// action again. Nothing is loaded from anywhere but this controller.

import { h, fill, unit } from "./dom.js";
import { Api, query } from "./api.js";
import { Stream } from "./stream.js";
import { Model } from "./model.js";
import { sitesView, talkgroupsView, callsView, alarmsView, emergencyBanner } from "./views.js";
import { unitsView } from "./units.js";
import { historyView, systemView } from "./records.js";

const model = new Model();
const api = new Api((reason) => loggedOut(reason));
const main = document.getElementById("main");
const tabs = document.getElementById("tabs");
const connection = document.getElementById("connection");
const who = document.getElementById("who");
const logoutButton = document.getElementById("logout");
const loginForm = document.getElementById("login");

let views = [];
let current = null;
let banner = null;
let audio = null;
let scheduled = false;
const notices = h("div", { class: "notices", role: "status", "aria-live": "polite" });

// Aliases by "fleet/member", read from the subscribers as units are first shown
// (null: none, or not this operator's to see).
const aliases = new Map();
const asked = new Set(); // looked up, or to be
let wanted = [];

async function lookUpAliases() {
  const batch = wanted;
  wanted = [];
  for (const key of batch) {
    const [fleet, member] = key.split("/");
    try {
      const page = await api.get(`/api/v1/subscribers${query({ fleet, member, limit: 1 })}`);
      aliases.set(key, page.subscribers[0]?.alias ?? null);
    } catch {
      aliases.set(key, null);
    }
  }
  if (batch.length) model.changed("aliases");
}

const ctx = {
  api,
  model,
  // A unit as dispatchers know it: fleet/member and its alias.
  label(u) {
    if (!u) return unit(u);
    const key = unit(u);
    const alias = aliases.get(key);
    if (!asked.has(key)) {
      asked.add(key);
      if (wanted.length === 0) setTimeout(lookUpAliases, 0);
      wanted.push(key);
    }
    return alias ? `${key} “${alias}”` : key;
  },
  // A short message at the foot of the page.
  notify(text) {
    const p = h("p", { text });
    notices.append(p);
    setTimeout(() => p.remove(), 8000);
  },
  // The emergency tone: two short beeps, once the browser allows sound (after the
  // operator's first click or key on the page).
  alert() {
    if (!audio || audio.state !== "running") return;
    const t = audio.currentTime;
    for (const at of [0, 0.35]) {
      const o = audio.createOscillator();
      const g = audio.createGain();
      o.frequency.value = 960;
      g.gain.setValueAtTime(0.2, t + at);
      g.gain.setValueAtTime(0, t + at + 0.25);
      o.connect(g).connect(audio.destination);
      o.start(t + at);
      o.stop(t + at + 0.3);
    }
  },
};

function allowSound() {
  if (!audio) audio = new AudioContext();
  if (audio.state === "suspended") audio.resume();
}
document.addEventListener("pointerdown", allowSound, { capture: true });
document.addEventListener("keydown", allowSound, { capture: true });

const stream = new Stream(api, (type, e) => model.apply(type, e), (state, detail) => {
  connection.dataset.state = state;
  const ha = model.ha ? ` · ${model.ha.role}, epoch ${model.ha.epoch}` : "";
  connection.textContent = `● ${state}${detail ? ` (${detail})` : ""}${state === "live" ? ha : ""}`;
  showSeq();
});

// How far the console has followed the stream, for the curious and for tests.
function showSeq() {
  Object.assign(connection.dataset, { seq: model.seq, skipped: model.skipped, resumes: stream.resumes });
  connection.title = `last event ${model.seq}; resumed ${stream.resumes} times`;
}

// Redraws once per frame at most, whatever the number of events.
model.subscribe(() => {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    banner?.render();
    current?.render();
    showSeq();
  });
});
setInterval(() => current?.ticks && current.render(), 1000);

function show(view) {
  current = view;
  for (const b of tabs.querySelectorAll("button")) b.setAttribute("aria-current", b.dataset.view === view.name ? "page" : "false");
  fill(main, view.el, notices);
  view.render();
  view.shown?.();
  location.hash = view.name;
}

function start() {
  loginForm.hidden = true;
  const s = api.session;
  who.textContent = `${s.name} (${s.role}${s.fleets.length ? `, fleets ${s.fleets.join(", ")}` : ""})`;
  logoutButton.hidden = false;
  views = [
    ["sites", "Sites", sitesView],
    ["talkgroups", "Talkgroups", talkgroupsView],
    ["calls", "Calls", callsView],
    ["units", "Units", unitsView],
    ["alarms", "Alarms", alarmsView],
    ["history", "History", historyView],
    ...(api.can("admin") ? [["system", "System", systemView]] : []),
  ].map(([name, title, make]) => Object.assign(make(ctx), { name, title }));
  fill(tabs, views.map((v) => {
    const b = h("button", { type: "button", "data-view": v.name, text: v.title });
    b.addEventListener("click", () => show(v));
    return b;
  }));
  tabs.hidden = false;
  banner = emergencyBanner(ctx);
  stream.start();
  show(views.find((v) => `#${v.name}` === location.hash) ?? views[0]);
}

function loggedOut(reason) {
  stream.stop();
  aliases.clear();
  asked.clear();
  model.reset();
  views = [];
  current = null;
  banner = null;
  fill(document.getElementById("emergencies"));
  fill(tabs);
  tabs.hidden = true;
  logoutButton.hidden = true;
  who.textContent = "";
  fill(main, loginForm);
  loginForm.hidden = false;
  loginForm.reset();
  document.getElementById("login-error").textContent = reason === "logged out" ? "" : reason;
}

loginForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(loginForm);
  const error = document.getElementById("login-error");
  error.textContent = "";
  try {
    await api.login(f.get("username"), f.get("password"));
  } catch (e) {
    error.textContent = e.message;
    return;
  }
  start();
});
logoutButton.addEventListener("click", () => api.logout());

if (await api.restore()) start();
