import type { ReadonlyPageSet } from './pageset.ts';

/**
 * How much of a send order a decision needs to carry. The shell sends only
 * the prefix of `send` that fits the budget, so a policy that lists every
 * stale page pays for the guest's size every epoch for nothing. The prefix is
 * sized from the budget at the recent wire cost of a page, with room for
 * pages cheaper than that (zero pages, compression); should the shell still
 * get through a whole cut list, the room doubles.
 */
const INITIAL_ROOM = 2;
const MAX_ROOM = 1024;
/** Entries always carried beyond the budget's share (a tiny budget still gets a frame's worth). */
const SLACK_ENTRIES = 64;

export class SendPrefix {
  private room = INITIAL_ROOM;
  /** Length of the previous decision's list when it was cut short, else -1. */
  private cutAt = -1;

  /**
   * Entries to carry for a budget of `budgetBytes`, given how many entries of
   * the previous list the shell got through. Infinity for an unbounded budget.
   */
  limit(budgetBytes: number, wireBytesPerPage: number, consumed: number): number {
    if (this.cutAt >= 0 && consumed >= this.cutAt) this.room = Math.min(MAX_ROOM, this.room * 2);
    this.cutAt = -1;
    if (!Number.isFinite(budgetBytes)) return Infinity;
    return Math.ceil((this.room * Math.max(0, budgetBytes)) / Math.max(1, wireBytesPerPage)) + SLACK_ENTRIES;
  }

  /** The list handed to the shell has `length` entries, and was cut there (more were available). */
  handed(length: number, cut: boolean): void {
    this.cutAt = cut ? length : -1;
  }

  get roomFactor(): number {
    return this.room;
  }
}

/** The lowest `limit` members of `set` (all of them for an unbounded limit), telling `prefix` whether it cut. */
export function takeHead(set: ReadonlyPageSet, limit: number, prefix: SendPrefix): Uint32Array {
  if (!Number.isFinite(limit)) return set.toArray();
  const h = set.head(limit + 1);
  const cut = h.length > limit;
  const send = cut ? h.subarray(0, limit) : h;
  prefix.handed(send.length, cut);
  return send;
}
