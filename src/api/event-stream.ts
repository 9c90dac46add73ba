import { EventEmitter } from 'node:events';

/** Every event carries its name and a wall-clock timestamp (ISO 8601), as the CLI's NDJSON lines do. */
export type Stamped<E extends { event: string }> = E & { readonly ts: string };

/**
 * Events of a running agent, two ways: an EventEmitter (`on('progress', …)`,
 * or `on('event', …)` for all) and an async iterable (`for await (const e of
 * m)`), which ends when the agent does. An iterator sees the events from
 * the moment it is created: create it before the first await.
 */
export class EventStream<E extends { event: string }> extends EventEmitter implements AsyncIterable<Stamped<E>> {
  private readonly queues = new Set<{ items: Array<Stamped<E>>; wake: (() => void) | undefined }>();
  private ended = false;

  /** Stamps and delivers one event; returns it as delivered. */
  protected publish(e: E): Stamped<E> {
    const s = { ...e, ts: new Date().toISOString() } as Stamped<E>;
    for (const q of this.queues) {
      q.items.push(s);
      q.wake?.();
    }
    // 'error' is special to EventEmitter (it throws without a listener); no agent event is named so.
    this.emit('event', s);
    if (s.event !== 'error') this.emit(s.event, s);
    return s;
  }

  protected endEvents(): void {
    this.ended = true;
    for (const q of this.queues) q.wake?.();
  }

  [Symbol.asyncIterator](): AsyncIterator<Stamped<E>> {
    const q: { items: Array<Stamped<E>>; wake: (() => void) | undefined } = { items: [], wake: undefined };
    this.queues.add(q);
    const done = (): IteratorResult<Stamped<E>> => {
      this.queues.delete(q);
      return { done: true, value: undefined };
    };
    return {
      next: async (): Promise<IteratorResult<Stamped<E>>> => {
        for (;;) {
          const item = q.items.shift();
          if (item !== undefined) return { done: false, value: item };
          if (this.ended) return done();
          await new Promise<void>((r) => (q.wake = r));
          q.wake = undefined;
        }
      },
      return: async (): Promise<IteratorResult<Stamped<E>>> => done(),
    };
  }
}
