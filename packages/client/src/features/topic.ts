/** Pub/sub topics: subscriptions are re-sent after every reconnect by the sync engine. */
import { checkName } from './names.js';

export interface TopicMessage<T = unknown> {
  topic: string;
  data: T;
  publisherId?: string;
  timestamp: number;
}

export interface TopicBackend {
  subscribeTopic(name: string): void;
  unsubscribeTopic(name: string): void;
  publishTopic(name: string, data: unknown): void;
}

export class TopicHandle<T = unknown> {
  private readonly listeners = new Set<(message: TopicMessage<T>) => void>();

  constructor(
    readonly name: string,
    private readonly backend: TopicBackend,
  ) {
    checkName('topic', name);
  }

  /** Publish (queued while offline, bounded; the publisher does not receive its own message). */
  publish(data: T): void {
    this.backend.publishTopic(this.name, data);
  }

  subscribe(listener: (message: TopicMessage<T>) => void): () => void {
    this.listeners.add(listener);
    if (this.listeners.size === 1) this.backend.subscribeTopic(this.name);
    return () => {
      if (this.listeners.delete(listener) && this.listeners.size === 0) this.backend.unsubscribeTopic(this.name);
    };
  }

  /** @internal */
  deliver(message: TopicMessage<T>): void {
    for (const l of [...this.listeners]) l(message);
  }
}
