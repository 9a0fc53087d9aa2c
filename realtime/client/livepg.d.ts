// Type declarations for livepg.js, served by every node at /livepg.d.ts.

export type Status = "connecting" | "live" | "reconnecting" | "offline";

export declare const STATUS: {
  readonly CONNECTING: "connecting";
  readonly LIVE: "live";
  readonly RECONNECTING: "reconnecting";
  readonly OFFLINE: "offline";
};

/** One event of the stream. `id` is opaque ('<seq>-<epoch>'): compare it with nothing. */
export interface LiveEvent<T = unknown> {
  type: string;
  id: string;
  topic: string;
  data: T;
}

/** A member of a topic's presence. `id` is stable across the page's reconnects; `sub` is its token's subject ("" when anonymous). */
export interface Member<M = unknown> {
  id: string;
  sub: string;
  meta?: M;
}

/**
 * The data of `event: presence`: a snapshot ("sync", the first frames of
 * each connection, with the position `at` it reflects), then each "join"
 * (a new member, or new meta) and "leave".
 */
export type PresenceChange<M = unknown> =
  | { op: "sync"; at: string; members: Member<M>[] }
  | { op: "join"; id: string; sub: string; meta?: M }
  | { op: "leave"; id: string; sub: string };

export interface PresenceOptions<M = unknown> {
  /** Exact topics to be a member of while the stream is open; each must be among (or matched by) `topics`. */
  topics: string | string[];
  /** A small JSON object of the page's own (at most 1 KiB), shown to the others. */
  meta?: M;
  /** The page's key: by default one per browser tab (sessionStorage), so that reconnects and reloads are the same member. */
  key?: string;
  /** Called with a topic's members after each snapshot, join and leave. */
  onMembers?: (topic: string, members: Member<M>[], change: PresenceChange<M>) => void;
}

export interface SubscribeOptions {
  /** Topic selectors: exact topics, or prefixes ending in "/*". */
  topics: string | string[];
  /** The position the page's state reflects (livepg.head(), read with the state). Without it the stream starts now. */
  from?: string | null;
  /** Called on `event: reset`: refetch the state and return its position; the stream continues from it. */
  reset?: () => Promise<string | null> | string | null;
  /** The node's base URL; "" (the default) is the page's own origin. */
  url?: string;
  /** A token for the query parameter, or a callback giving a fresh one (called before each connection and before the token's exp). Leave it out to use the livepg_token cookie. */
  token?: string | (() => Promise<string | undefined> | string | undefined);
  /** Send cookies to another origin (the node must list the page's origin in its CORS origins). */
  withCredentials?: boolean;
  onStatus?: (status: Status) => void;
  onError?: (err: unknown) => void;
  /** Backoff bounds for reconnecting after an error answer, in ms (defaults 500 and 30000). */
  minDelay?: number;
  maxDelay?: number;
  /** Refresh the token this many seconds before its exp (default 30, at most a fifth of its lifetime). */
  refreshMargin?: number;
  /** Join these topics' presence (GET /v1/events?...&presence=...) and follow their members. */
  presence?: PresenceOptions;
}

export interface Subscription {
  readonly status: Status;
  /** The id of the last event delivered: where the stream resumes. */
  readonly lastId: string | null;
  /** Calls fn with each event of the type ("*": every event); returns a function that stops it. */
  on<T = unknown>(type: string, fn: (event: LiveEvent<T>) => void): () => void;
  off(type: string, fn: (event: LiveEvent<any>) => void): void;
  /** A joined presence topic's members now. */
  members<M = unknown>(topic: string): Member<M>[];
  /** Ends the stream and its timers. */
  close(): void;
}

export declare function subscribe(options: SubscribeOptions): Subscription;
