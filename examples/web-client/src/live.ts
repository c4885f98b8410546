// Live sync: follows TaskService.WatchTasks over gRPC-web, so a change made on another device
// (or in another tab) shows up here without a reload.
//
// The stream starts with the whole list (one UPSERTED per task, then CURRENT) and then sends
// every change. Each event carries a resume token; when the stream breaks (a network blip, a
// server restart, the stream's maximum age) this reconnects with the last token and gets
// exactly the changes it missed. Tokens seen before CURRENT are not kept: resuming from one
// would skip the part of the initial list not yet received, so a stream lost that early
// starts again from the beginning.

import { Code, ConnectError } from "@connectrpc/connect";
import type { Api } from "./api";
import { WatchTasksResponse_EventType as EventType, type Task } from "./gen/todo/task/v1/task_pb";

/** What the person is shown about the stream. */
export type LiveState = "connecting" | "live" | "reconnecting";

export interface LiveHandlers {
  /** Every task of the user, as of the moment the stream caught up. Replaces what was known. */
  current(tasks: Task[]): void;
  upserted(task: Task): void;
  deleted(id: string): void;
  state(state: LiveState): void;
  /** The stream was refused as UNAUTHENTICATED and the session could not be renewed. */
  sessionEnded(err: ConnectError): void;
}

export interface Live {
  /** (Re)starts following the current session's tasks from the beginning. */
  start(): void;
  /** Stops following (signed out). */
  stop(): void;
}

/** Reconnect delays grow from the first to the last, each with random jitter. */
const FIRST_RETRY_MS = 500;
const LAST_RETRY_MS = 30_000;
/** A stream that ended without an error (rare: servers end streams with a status) is resumed after this. */
const CLEAN_END_PAUSE_MS = 250;

export function createLive(
  api: Api,
  accessToken: () => string | null,
  renew: (stale: string) => Promise<boolean>,
  handlers: LiveHandlers,
): Live {
  let running: AbortController | null = null;

  const start = (): void => {
    running?.abort();
    const controller = new AbortController();
    running = controller;
    void follow(controller.signal);
  };

  const stop = (): void => {
    running?.abort();
    running = null;
  };

  async function follow(signal: AbortSignal): Promise<void> {
    let resumeToken = "";
    /** Consecutive failed attempts, for the back-off. */
    let failures = 0;
    /** Whether the last attempt was refused and renewed without a single event in between. */
    let renewedInVain = false;
    handlers.state("connecting");
    while (!signal.aborted) {
      const sent = accessToken();
      if (sent === null) return;
      // The initial list, collected until CURRENT; null when resuming.
      let initial: Map<string, Task> | null = resumeToken === "" ? new Map() : null;
      try {
        const stream = api.tasks.watchTasks(
          { resumeToken },
          {
            signal,
            // A stream lives until the server ends it; the unary calls' deadline must not apply.
            timeoutMs: 0,
            // Resuming sends no CURRENT: the stream is live as soon as the server answers.
            onHeader: () => {
              if (initial === null && !signal.aborted) handlers.state("live");
            },
          },
        );
        for await (const event of stream) {
          if (signal.aborted) return;
          failures = 0;
          renewedInVain = false;
          switch (event.type) {
            case EventType.UPSERTED:
              if (event.task === undefined) break;
              if (initial !== null) initial.set(event.task.id, event.task);
              else handlers.upserted(event.task);
              break;
            case EventType.DELETED:
              if (initial !== null) initial.delete(event.taskId);
              else handlers.deleted(event.taskId);
              break;
            case EventType.CURRENT:
              if (initial !== null) handlers.current([...initial.values()]);
              initial = null;
              handlers.state("live");
              break;
            default:
              break; // BOOKMARK: only the token is news; unknown types from a newer server: ignored
          }
          if (initial === null) resumeToken = event.resumeToken;
        }
        if (signal.aborted) return;
        await pause(CLEAN_END_PAUSE_MS, signal);
      } catch (caught) {
        if (signal.aborted) return;
        const err = ConnectError.from(caught);
        if (err.code === Code.Unauthenticated) {
          // An access token that expired (the stream ends at its expiry) is renewed and the
          // stream resumed; a revoked session cannot be renewed and ends here too.
          const renewed = !renewedInVain && (await renew(sent).catch(() => false));
          if (signal.aborted) return;
          if (!renewed) {
            handlers.sessionEnded(err);
            return;
          }
          renewedInVain = true;
          continue;
        }
        if (err.code === Code.FailedPrecondition || err.code === Code.InvalidArgument) {
          // Away longer than the server keeps changes (or a token it cannot read): start over.
          resumeToken = "";
          handlers.state("reconnecting");
          continue;
        }
        // UNAVAILABLE (restart, maximum age, network), RESOURCE_EXHAUSTED (too many streams,
        // read too slowly), anything else: try again, later each time.
        failures++;
        handlers.state("reconnecting");
        await pause(backoff(failures), signal);
      }
    }
  }

  return { start, stop };
}

/** Exponential back-off with jitter: half the step fixed, half random, so tabs do not reconnect in step. */
function backoff(failures: number): number {
  const step = Math.min(LAST_RETRY_MS, FIRST_RETRY_MS * 2 ** (failures - 1));
  return step / 2 + Math.random() * (step / 2);
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
