// The event stream (`GET /api/v1/events`) as the console follows it: opened with a
// single-use ticket (an EventSource cannot send the token), resumed after a drop from
// the last event seen (`last_event_id`), so that nothing is missed or applied twice,
// and reopened on a fresh snapshot when the controller says the stream lagged or the
// controller itself stopped (a restarted controller numbers its events from 1 again,
// so an old id means nothing to it).

const TYPES = ["unit", "call", "slot", "link", "radio_command", "subscriber", "message",
  "parameter", "clone_suspected", "alarm"];

export class Stream {
  // `onEvent(type, data)` gets the snapshot and every event; `onState(state, detail)`
  // the connection's state: `connecting`, `live`, `reconnecting` or `offline`.
  constructor(api, onEvent, onState) {
    this.api = api;
    this.onEvent = onEvent;
    this.onState = onState;
    this.source = null;
    this.lastId = null;
    this.retry = 0;
    this.timer = null;
    this.stopped = true;
    this.resumes = 0;
  }

  start() {
    this.stopped = false;
    this.lastId = null;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
    this.onState("offline", "");
  }

  async open() {
    if (this.stopped) return;
    this.onState(this.retry ? "reconnecting" : "connecting", this.retry ? `attempt ${this.retry}` : "");
    let ticket;
    try {
      ticket = (await this.api.post("/api/v1/events/ticket")).ticket;
    } catch (e) {
      if (e.status === 401 || e.status === 403) return; // the session is over: logged out
      this.again(e.message);
      return;
    }
    if (this.stopped) return;
    const q = new URLSearchParams({ ticket });
    if (this.lastId !== null) q.set("last_event_id", this.lastId);
    const es = new EventSource(`/api/v1/events?${q}`);
    this.source = es;
    es.addEventListener("snapshot", (e) => {
      this.retry = 0;
      this.seen(e);
      this.onEvent("snapshot", JSON.parse(e.data));
      this.onState("live", "");
    });
    for (const t of TYPES) {
      es.addEventListener(t, (e) => {
        this.seen(e);
        this.onEvent(t, JSON.parse(e.data));
      });
    }
    es.addEventListener("ha", (e) => this.onEvent("ha", JSON.parse(e.data)));
    es.addEventListener("lagged", () => this.onState("reconnecting", "catching up"));
    es.addEventListener("closed", (e) => {
      const why = JSON.parse(e.data);
      es.close();
      // A restarted controller's numbers start again: ask for its state afresh.
      if (why.code === "controller_stopped") this.lastId = null;
      this.again(why.message);
    });
    es.onopen = () => {
      // A resumed stream sends no snapshot: it is live once it opens.
      if (this.lastId !== null) {
        this.retry = 0;
        this.resumes += 1;
        this.onState("live", "");
      }
    };
    es.onerror = () => {
      if (this.source !== es) return;
      es.close();
      this.again("connection lost");
    };
  }

  seen(e) {
    if (e.lastEventId) this.lastId = e.lastEventId;
  }

  // Reconnects after a pause that grows with each failed attempt (to 10 s).
  again(detail) {
    this.source = null;
    if (this.stopped) return;
    this.retry += 1;
    this.onState("reconnecting", detail);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), Math.min(10000, 250 * 2 ** this.retry));
  }
}
