// The live system as the event stream tells it: the snapshot, then every event applied
// in order (each once: an event at or below the last sequence number is ignored).
// Views read it and redraw when it changes; they never change it.

const RECENT = 20;

export class Model {
  constructor() {
    this.listeners = new Set();
    this.reset();
  }

  reset() {
    this.seq = 0;
    this.skipped = 0;
    this.loaded = false;
    this.units = new Map(); // imsi → unit on the air
    this.calls = new Map(); // call id → call in progress
    this.slots = new Map(); // site → [{carrier, slot, state, call}]
    this.queues = new Map(); // site → [queued request]
    this.links = new Map(); // site → {site, name, connected}
    this.alarms = new Map(); // alarm id → alarm that needs attention
    this.ended = []; // the last calls ended, newest first
    this.commands = new Map(); // imsi → the last radio command's outcome
    this.emergencyCalls = new Map(); // "fleet/member" → the last emergency asked for
    this.parameters = null; // name → value, once a view has read them
    this.ha = null;
  }

  // `f()` after every change.
  subscribe(f) {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  changed(type) {
    for (const f of this.listeners) f(type);
  }

  apply(type, e) {
    if (type === "snapshot") {
      this.snapshot(e);
    } else if (type === "ha") {
      this.ha = e;
    } else {
      if (e.seq <= this.seq) return; // already reflected
      // Numbers the stream moved past without sending: events this operator may not see.
      this.skipped += e.seq - this.seq - 1;
      this.seq = e.seq;
      const f = this[`on_${type}`];
      if (f) f.call(this, e);
    }
    this.changed(type);
  }

  snapshot(s) {
    const keep = { ended: this.ended, commands: this.commands, parameters: this.parameters, emergencyCalls: this.emergencyCalls };
    this.reset();
    Object.assign(this, keep);
    this.seq = s.seq;
    this.loaded = true;
    for (const u of s.units) this.units.set(u.imsi, u);
    for (const c of s.calls) this.calls.set(c.call, c);
    for (const x of s.slots) this.slots.set(x.site, x.slots);
    for (const q of s.queues) this.queues.set(q.site, q.requests);
    for (const l of s.links) this.links.set(l.site, l);
    for (const a of s.alarms) this.alarms.set(a.id, a);
  }

  on_unit(e) {
    const was = this.units.get(e.imsi);
    switch (e.kind) {
      case "registered":
        this.units.set(e.imsi, { imsi: e.imsi, unit: e.unit, tmsi: e.tmsi, site: e.site, talkgroups: was?.talkgroups ?? [], last_activity_ms: e.at_ms });
        break;
      case "location_changed":
        this.units.set(e.imsi, { ...was, imsi: e.imsi, unit: e.unit, tmsi: e.tmsi, site: e.to, talkgroups: was?.talkgroups ?? [], last_activity_ms: e.at_ms });
        break;
      case "affiliated":
        if (was) this.units.set(e.imsi, { ...was, site: e.site, talkgroups: e.talkgroups, last_activity_ms: e.at_ms });
        break;
      case "left":
        this.units.delete(e.imsi);
        break;
    }
  }

  on_call(e) {
    switch (e.kind) {
      case "granted": {
        this.calls.set(e.call, {
          call: e.call, type: e.type, caller: e.caller, target: e.target, slots: e.slots,
          talker: e.caller, requested_at_ms: e.at_ms, granted_at_ms: e.at_ms,
        });
        for (const s of e.slots) this.setSlot(s.site, s.carrier, s.slot, "busy", e.call);
        for (const site of new Set(e.slots.map((s) => s.site))) this.dequeue(site, e.caller);
        break;
      }
      case "queued":
      case "queue_moved": {
        const q = (this.queues.get(e.site) ?? []).filter((r) => !same(r.caller, e.caller));
        const old = (this.queues.get(e.site) ?? []).find((r) => same(r.caller, e.caller));
        q.push({ ...old, caller: e.caller, position: e.position, txn: e.txn, emergency: e.emergency ?? old?.emergency, requested_at_ms: old?.requested_at_ms ?? e.at_ms });
        q.sort((a, b) => a.position - b.position);
        this.queues.set(e.site, q);
        break;
      }
      case "queue_left":
        this.dequeue(e.site, e.caller);
        break;
      case "emergency":
        this.emergencyCalls.set(`${e.caller.fleet}/${e.caller.member}`, e);
        break;
      case "talker": {
        const c = this.calls.get(e.call);
        if (c) c.talker = e.talker;
        break;
      }
      case "preempted": {
        const c = this.calls.get(e.call);
        if (c) c.slots = c.slots.filter((s) => s.site !== e.site);
        break;
      }
      case "ended": {
        if (e.call !== undefined) {
          this.calls.delete(e.call);
          for (const [site, slots] of this.slots) {
            for (const s of slots) if (s.call === e.call && s.state === "busy") this.setSlot(site, s.carrier, s.slot, "free", undefined);
          }
        }
        this.ended.unshift(e);
        this.ended.length = Math.min(this.ended.length, RECENT * 10);
        break;
      }
    }
  }

  on_slot(e) {
    this.setSlot(e.site, e.carrier, e.slot, e.in_service ? "free" : "out_of_service", undefined);
  }

  on_link(e) {
    const l = this.links.get(e.site) ?? { site: e.site, name: `site ${e.site}` };
    this.links.set(e.site, { ...l, connected: e.up });
  }

  on_radio_command(e) {
    this.commands.set(e.imsi, e);
  }

  on_parameter(e) {
    if (this.parameters) this.parameters[e.name] = e.value;
  }

  on_alarm(e) {
    const a = e.alarm;
    if (a.state === "finished") this.alarms.delete(a.id);
    else this.alarms.set(a.id, a);
  }

  setSlot(site, carrier, slot, state, call) {
    const slots = this.slots.get(site);
    const s = slots?.find((x) => x.carrier === carrier && x.slot === slot);
    if (!s) return;
    s.state = state;
    s.call = call;
  }

  dequeue(site, caller) {
    const q = this.queues.get(site);
    if (q) this.queues.set(site, q.filter((r) => !same(r.caller, caller)));
  }

  // The emergency alarms that need attention, the unacknowledged first.
  emergencies() {
    return [...this.alarms.values()]
      .filter((a) => a.kind === "emergency")
      .sort((a, b) => Boolean(a.acknowledged_at_ms) - Boolean(b.acknowledged_at_ms) || b.last_raised_at_ms - a.last_raised_at_ms);
  }
}

export function same(a, b) {
  return a && b && a.fleet === b.fleet && a.member === b.member;
}
