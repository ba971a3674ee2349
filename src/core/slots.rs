//! One site's slot table: which TDMA slot carries which call, which are out of
//! service, and which free slot the next call gets under the slot policy.
//!
//! Slots are numbered carrier by carrier; carrier 0 slot 0 is the control channel and
//! is never granted. A slot that fails while a call holds it stays out of service when
//! the call lets go of it.

use crate::protocol::{CallId, Carrier, ResourceState, Slot, SlotSelector};

/// How a free slot is chosen among the free ones of a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotPolicy {
    /// The carrier with the fewest busy slots first (spreads load), lowest index on ties.
    LeastLoaded,
    /// The lowest-numbered carrier with a free slot first (keeps carriers idle).
    Pack,
}

/// What a slot is doing, as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotUse {
    /// The control channel (carrier 0 slot 0): never granted.
    Control,
    /// Free to grant.
    Free,
    /// Carrying this call.
    Busy(CallId),
    /// Out of service (reported faulty, or taken out by an operator).
    OutOfService,
}

/// One slot of a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    /// The carrier.
    pub carrier: u8,
    /// The slot on it.
    pub slot: u8,
    /// What it does.
    pub state: SlotUse,
}

/// What a status report ([`SlotTable::set_status`]) did to one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusEffect {
    /// The slot went out of service (`in_service: false`) or came back (`true`).
    Service {
        /// The slot on the reported carrier.
        slot: Slot,
        /// Whether it is in service now.
        in_service: bool,
    },
    /// The slot failed under this call: the call must move to another slot or end.
    /// Until it lets go, the slot is out of service and the call still holds it.
    CallHit(CallId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Control,
    Free,
    Busy(CallId),
    Faulty,
    /// Faulty while a call held it; the call is moved or ended at once, so this never lasts.
    FaultyBusy,
}

impl SlotState {
    fn out_of_service(self) -> bool {
        matches!(self, SlotState::Faulty | SlotState::FaultyBusy)
    }

    fn view(self) -> SlotUse {
        match self {
            SlotState::Control => SlotUse::Control,
            SlotState::Free => SlotUse::Free,
            SlotState::Busy(c) => SlotUse::Busy(c),
            SlotState::Faulty | SlotState::FaultyBusy => SlotUse::OutOfService,
        }
    }
}

/// The slots of one site: `carriers` × `slots_per_carrier`, carrier 0 slot 0 the
/// control channel. Only [`SlotTable::allocate`] and [`SlotTable::assign`] make a slot
/// busy, so the control slot and out-of-service slots are never granted.
#[derive(Clone, Debug)]
pub struct SlotTable {
    /// 1..=6.
    slots_per_carrier: u8,
    /// Carrier by carrier; never empty, index 0 is the control slot.
    slots: Vec<SlotState>,
}

impl SlotTable {
    /// A table of `carriers` (at least 1) carriers of `slots_per_carrier` slots
    /// (clamped to 1..=6), all free but the control slot.
    pub fn new(carriers: u8, slots_per_carrier: u8) -> Self {
        let spc = slots_per_carrier.clamp(1, 6);
        let n = usize::from(carriers.max(1)) * usize::from(spc);
        let mut slots = vec![SlotState::Free; n];
        slots[0] = SlotState::Control;
        SlotTable {
            slots_per_carrier: spc,
            slots,
        }
    }

    /// Free (grantable) slots.
    pub fn free(&self) -> usize {
        self.slots.iter().filter(|x| **x == SlotState::Free).count()
    }

    /// Gives `call` a free slot chosen by `policy`; `None` when no slot is free.
    pub fn allocate(&mut self, policy: SlotPolicy, call: CallId) -> Option<(Carrier, Slot)> {
        let spc = usize::from(self.slots_per_carrier);
        let carriers = self.slots.len() / spc;
        let mut best: Option<(usize, usize)> = None; // (busy count, carrier)
        for c in 0..carriers {
            let chunk = &self.slots[c * spc..(c + 1) * spc];
            if !chunk.contains(&SlotState::Free) {
                continue;
            }
            let busy = chunk.iter().filter(|x| matches!(x, SlotState::Busy(_))).count();
            match policy {
                SlotPolicy::Pack => {
                    best = Some((busy, c));
                    break;
                }
                SlotPolicy::LeastLoaded => {
                    if best.is_none_or(|(b, _)| busy < b) {
                        best = Some((busy, c));
                    }
                }
            }
        }
        let (_, c) = best?;
        let idx = (c * spc..(c + 1) * spc).find(|&i| self.slots[i] == SlotState::Free)?;
        self.slots[idx] = SlotState::Busy(call);
        Some((Carrier::new((idx / spc) as u8)?, Slot::new((idx % spc) as u8)?))
    }

    /// Hands the slot `cs` straight to `call` (an emergency taking over the slots of
    /// the call it ended). A slot outside the table is ignored.
    pub fn assign(&mut self, cs: (Carrier, Slot), call: CallId) {
        self.set(cs, SlotState::Busy(call));
    }

    /// Gives the slot `cs` back: free again, unless it failed while busy, then out of
    /// service. A slot outside the table is ignored.
    pub fn release(&mut self, cs: (Carrier, Slot)) {
        self.set(cs, SlotState::Free);
    }

    /// Takes the slot `cs` out of service (its call moved off it). A slot outside the
    /// table is ignored.
    pub fn retire(&mut self, cs: (Carrier, Slot)) {
        self.set(cs, SlotState::Faulty);
    }

    /// Applies a gateway's report that slots of `carrier` failed or came back, and
    /// tells `effect` of each slot that changed service state and each call that lost
    /// its slot. The control slot never changes; a busy slot that comes back was never
    /// out. Returns `false` (and changes nothing) when the carrier or slot is not in
    /// the table.
    pub fn set_status(
        &mut self,
        carrier: Carrier,
        sel: SlotSelector,
        state: ResourceState,
        mut effect: impl FnMut(StatusEffect),
    ) -> bool {
        let spc = self.slots_per_carrier;
        if usize::from(carrier.get()) * usize::from(spc) >= self.slots.len() {
            return false;
        }
        let slots = match sel {
            SlotSelector::Slot(x) if x.get() < spc => x.get()..x.get() + 1,
            SlotSelector::Slot(_) => return false,
            SlotSelector::WholeCarrier => 0..spc,
        };
        for sl in slots {
            let idx = usize::from(carrier.get()) * usize::from(spc) + usize::from(sl);
            let Some(x) = self.slots.get_mut(idx) else {
                continue;
            };
            let cur = *x;
            let new = match (cur, state) {
                (SlotState::Control, _) => SlotState::Control,
                (SlotState::Busy(c), ResourceState::Faulty) => {
                    effect(StatusEffect::CallHit(c));
                    SlotState::FaultyBusy
                }
                (SlotState::Free | SlotState::Faulty, ResourceState::Faulty) => SlotState::Faulty,
                (SlotState::Faulty, ResourceState::InService) => SlotState::Free,
                (other, _) => other,
            };
            *x = new;
            if cur.out_of_service() != new.out_of_service() {
                if let Some(slot) = Slot::new(sl) {
                    effect(StatusEffect::Service {
                        slot,
                        in_service: !new.out_of_service(),
                    });
                }
            }
        }
        true
    }

    /// What the slot `cs` does (`None`: not in the table).
    pub fn state(&self, (c, sl): (Carrier, Slot)) -> Option<SlotUse> {
        self.index((c, sl)).map(|i| self.slots[i].view())
    }

    /// What each slot does, in table order (carrier by carrier).
    pub fn uses(&self) -> impl Iterator<Item = SlotUse> + '_ {
        self.slots.iter().map(|s| s.view())
    }

    /// Every slot, carrier by carrier, as operators see it.
    pub fn view(&self) -> Vec<SlotView> {
        let spc = usize::from(self.slots_per_carrier);
        self.uses()
            .enumerate()
            .map(|(i, state)| SlotView {
                carrier: (i / spc) as u8,
                slot: (i % spc) as u8,
                state,
            })
            .collect()
    }

    fn index(&self, (c, sl): (Carrier, Slot)) -> Option<usize> {
        let idx = usize::from(c.get()) * usize::from(self.slots_per_carrier) + usize::from(sl.get());
        (idx < self.slots.len()).then_some(idx)
    }

    fn set(&mut self, cs: (Carrier, Slot), state: SlotState) {
        if let Some(x) = self.index(cs).and_then(|i| self.slots.get_mut(i)) {
            *x = match (*x, state) {
                // A slot that failed while busy stays out of service when freed.
                (SlotState::FaultyBusy, SlotState::Free) => SlotState::Faulty,
                (_, st) => st,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> CallId {
        CallId::new(n).unwrap()
    }

    fn cs(c: u8, s: u8) -> (Carrier, Slot) {
        (Carrier::new(c).unwrap(), Slot::new(s).unwrap())
    }

    fn carriers(t: &mut SlotTable, policy: SlotPolicy, calls: u32) -> Vec<u8> {
        (1..=calls)
            .filter_map(|n| t.allocate(policy, id(n)))
            .map(|(c, _)| c.get())
            .collect()
    }

    #[test]
    fn least_loaded_spreads_calls_over_carriers() {
        let mut t = SlotTable::new(2, 6);
        assert_eq!(carriers(&mut t, SlotPolicy::LeastLoaded, 4), vec![0, 1, 0, 1]);
    }

    #[test]
    fn pack_fills_the_lowest_carrier_first() {
        let mut t = SlotTable::new(2, 6);
        // Carrier 0 has five traffic slots (slot 0 is the control channel).
        assert_eq!(carriers(&mut t, SlotPolicy::Pack, 6), vec![0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn the_control_slot_is_never_granted() {
        for policy in [SlotPolicy::Pack, SlotPolicy::LeastLoaded] {
            let mut t = SlotTable::new(2, 3);
            assert_eq!(t.free(), 5);
            let granted: Vec<_> = (1..=10).filter_map(|n| t.allocate(policy, id(n))).collect();
            assert_eq!(granted.len(), 5);
            assert!(!granted.contains(&cs(0, 0)));
            assert_eq!(t.free(), 0);
            assert_eq!(t.state(cs(0, 0)), Some(SlotUse::Control));
        }
    }

    /// Applies a status report: whether its slots were in the table, and its effects.
    fn report(
        t: &mut SlotTable,
        carrier: u8,
        sel: SlotSelector,
        state: ResourceState,
    ) -> (bool, Vec<StatusEffect>) {
        let mut effects = Vec::new();
        let known = t.set_status(Carrier::new(carrier).unwrap(), sel, state, |e| effects.push(e));
        (known, effects)
    }

    fn service(slot: u8, in_service: bool) -> StatusEffect {
        StatusEffect::Service {
            slot: Slot::new(slot).unwrap(),
            in_service,
        }
    }

    fn one(slot: u8) -> SlotSelector {
        SlotSelector::Slot(Slot::new(slot).unwrap())
    }

    #[test]
    fn the_control_slot_cannot_be_taken_out_of_service() {
        let mut t = SlotTable::new(1, 2);
        let reported = report(&mut t, 0, SlotSelector::WholeCarrier, ResourceState::Faulty);
        assert_eq!(reported, (true, vec![service(1, false)]));
        assert_eq!(
            t.uses().collect::<Vec<_>>(),
            vec![SlotUse::Control, SlotUse::OutOfService]
        );
    }

    #[test]
    fn a_faulty_busy_slot_stays_out_of_service_when_freed() {
        let mut t = SlotTable::new(1, 3);
        let slot = t.allocate(SlotPolicy::Pack, id(7)).unwrap();
        assert_eq!(slot, cs(0, 1));
        let reported = report(&mut t, 0, one(1), ResourceState::Faulty);
        assert_eq!(
            reported,
            (true, vec![StatusEffect::CallHit(id(7)), service(1, false)])
        );
        assert_eq!(t.state(slot), Some(SlotUse::OutOfService));
        t.release(slot);
        assert_eq!(t.state(slot), Some(SlotUse::OutOfService));
        assert_eq!(t.free(), 1);
        // Back in service, it is free to grant again.
        let reported = report(&mut t, 0, one(1), ResourceState::InService);
        assert_eq!(reported, (true, vec![service(1, true)]));
        assert_eq!(t.state(slot), Some(SlotUse::Free));
        assert_eq!(t.free(), 2);
    }

    #[test]
    fn out_of_service_slots_are_not_granted_and_busy_ones_are_not_restored() {
        let mut t = SlotTable::new(1, 3);
        t.retire(cs(0, 1));
        assert_eq!(t.allocate(SlotPolicy::LeastLoaded, id(1)), Some(cs(0, 2)));
        assert_eq!(t.allocate(SlotPolicy::LeastLoaded, id(2)), None);
        let reported = report(&mut t, 0, SlotSelector::WholeCarrier, ResourceState::InService);
        assert_eq!(reported, (true, vec![service(1, true)]));
        assert_eq!(t.state(cs(0, 2)), Some(SlotUse::Busy(id(1))));
    }

    #[test]
    fn reports_outside_the_table_change_nothing() {
        let mut t = SlotTable::new(1, 3);
        let far_carrier = report(&mut t, 1, SlotSelector::WholeCarrier, ResourceState::Faulty);
        let far_slot = report(&mut t, 0, one(3), ResourceState::Faulty);
        assert_eq!(far_carrier, (false, vec![]));
        assert_eq!(far_slot, (false, vec![]));
        t.release(cs(1, 0));
        assert_eq!(t.state(cs(1, 0)), None);
        assert_eq!(t.free(), 2);
    }

    #[test]
    fn the_view_lists_every_slot_carrier_by_carrier() {
        let mut t = SlotTable::new(2, 2);
        t.assign(cs(1, 1), id(9));
        t.retire(cs(0, 1));
        let view = t.view();
        let states: Vec<_> = view.iter().map(|v| (v.carrier, v.slot, v.state)).collect();
        assert_eq!(
            states,
            vec![
                (0, 0, SlotUse::Control),
                (0, 1, SlotUse::OutOfService),
                (1, 0, SlotUse::Free),
                (1, 1, SlotUse::Busy(id(9))),
            ]
        );
    }
}
