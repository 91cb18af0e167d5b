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

/** What TopGun's topic callback gets beside the data. */
export interface TopicContext {
  timestamp: number;
  publisherId?: string;
  topic: string;
}

export type TopicCallback<T = unknown> = (data: T, context: TopicContext) => void;

export class TopicHandle<T = unknown> {
  private readonly listeners = new Set<(message: TopicMessage<T>) => void>();

  constructor(
    readonly name: string,
    private readonly backend: TopicBackend,
  ) {
    checkName('topic', name);
  }

  /** TopGun's name for the topic's name. */
  get id(): string {
    return this.name;
  }

  /** Publish (queued while offline, bounded; the publisher does not receive its own message). */
  publish(data: T): void {
    this.backend.publishTopic(this.name, data);
  }

  /** TopGun's shape: `callback(data, {timestamp, publisherId, topic})`. Returns an unsubscribe function. */
  subscribe(callback: TopicCallback<T>): () => void {
    return this.onMessage((m) => callback(m.data, { timestamp: m.timestamp, publisherId: m.publisherId, topic: m.topic }));
  }

  /** Our shape: the whole message (`{topic, data, publisherId, timestamp}`). */
  onMessage(listener: (message: TopicMessage<T>) => void): () => void {
    const l = (m: TopicMessage<T>): void => listener(m);
    this.listeners.add(l);
    if (this.listeners.size === 1) this.backend.subscribeTopic(this.name);
    return () => {
      if (this.listeners.delete(l) && this.listeners.size === 0) this.backend.unsubscribeTopic(this.name);
    };
  }

  /** @internal */
  deliver(message: TopicMessage<T>): void {
    for (const l of [...this.listeners]) l(message);
  }
}
