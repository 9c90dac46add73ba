import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PHASES, PhaseMachine, canTransition, guestPausedIn, isTerminal, type Phase } from '../../src/core/phase.ts';
import { PresyncError } from '../../src/core/errors.ts';

const LEGAL: Array<[Phase, Phase]> = [
  ['idle', 'presync'],
  ['presync', 'launched'],
  ['launched', 'final-copy'],
  ['final-copy', 'verify'],
  ['verify', 'handover'],
  ['handover', 'done'],
  ['idle', 'rollback'],
  ['presync', 'rollback'],
  ['launched', 'rollback'],
  ['final-copy', 'rollback'],
  ['verify', 'rollback'],
  // Only when the target answered HANDOVER with ERROR (it started nothing).
  ['handover', 'rollback'],
];

test('exactly the documented transitions are legal', () => {
  const legal = new Set(LEGAL.map(([a, b]) => `${a}>${b}`));
  for (const from of PHASES) {
    for (const to of PHASES) {
      assert.equal(canTransition(from, to), legal.has(`${from}>${to}`), `${from} → ${to}`);
    }
  }
});

test('the machine walks the happy path and records when each phase began', () => {
  const m = new PhaseMachine();
  const path: Phase[] = ['presync', 'launched', 'final-copy', 'verify', 'handover', 'done'];
  path.forEach((p, i) => m.to(p, i * 10));
  assert.equal(m.phase, 'done');
  assert.equal(m.enteredAt('final-copy'), 20);
  assert.equal(m.history.length, path.length);
  assert.ok(isTerminal(m.phase));
});

test('every illegal transition throws PRESYNC_ERR_BAD_PHASE and leaves the phase unchanged', () => {
  const reach: Record<Phase, Phase[]> = {
    idle: [],
    presync: ['presync'],
    launched: ['presync', 'launched'],
    'final-copy': ['presync', 'launched', 'final-copy'],
    verify: ['presync', 'launched', 'final-copy', 'verify'],
    handover: ['presync', 'launched', 'final-copy', 'verify', 'handover'],
    done: ['presync', 'launched', 'final-copy', 'verify', 'handover', 'done'],
    rollback: ['rollback'],
  };
  for (const from of PHASES) {
    for (const to of PHASES) {
      if (canTransition(from, to)) continue;
      const m = new PhaseMachine();
      reach[from].forEach((p, i) => m.to(p, i));
      assert.equal(m.phase, from);
      assert.throws(
        () => m.to(to, 99),
        (e: unknown) => e instanceof PresyncError && e.code === 'PRESYNC_ERR_BAD_PHASE' && e.message.includes(`${from} → ${to}`),
      );
      assert.equal(m.phase, from);
    }
  }
});

test('rollback is impossible once the handover is confirmed', () => {
  // From handover only when the target refused it (an ERROR answer): the engine decides that.
  assert.equal(canTransition('handover', 'rollback'), true);
  assert.equal(canTransition('done', 'rollback'), false);
  assert.deepEqual(PHASES.filter(guestPausedIn), ['final-copy', 'verify', 'handover']);
});
