// Keeping a session alive: Refresh before the access token expires and once when a call is
// refused as UNAUTHENTICATED, one refresh at a time across every tab of this browser.
//
// Refresh rotates the refresh token, so two tabs refreshing with the same one at once would
// race (the server answers a second use within 10 s with the same new pair, but later it
// would end the session as stolen). A Web Lock serialises renewals across tabs; inside it the
// stored session is read again, and a tab that finds a token newer than the one it found stale
// adopts it instead of refreshing again.

import { Code, ConnectError } from "@connectrpc/connect";
import { loadSession, saveSession, type Session } from "./config";
import type { RefreshResponse } from "./gen/todo/auth/v1/auth_pb";

const LOCK_NAME = "todo-grpc.refresh";
/** Renew this long before the access token expires. */
const AHEAD_MS = 60_000;
/** setTimeout's longest delay (about 24.8 days). */
const MAX_TIMER_MS = 2_147_483_647;

export interface Renewal {
  /** Renews the session whose access token `stale` was refused; true when a usable token is in place. */
  renew(stale: string): Promise<boolean>;
  /** (Re)arms the timer that renews shortly before `session` expires. */
  schedule(session: Session | null): void;
}

export function createRenewal(
  authUrl: string,
  refresh: (refreshToken: string) => Promise<RefreshResponse>,
  current: () => Session | null,
  adopt: (session: Session) => void,
): Renewal {
  let timer: ReturnType<typeof setTimeout> | undefined;
  /** The renewal under way in this tab, shared by every call that needs it. */
  let pending: Promise<boolean> | null = null;

  const renewLocked = async (stale: string): Promise<boolean> => {
    const stored = loadSession(authUrl);
    if (stored === null) return false;
    if (stored.accessToken !== stale) {
      adopt(stored); // another tab renewed meanwhile
      return true;
    }
    if (stored.refreshToken === "") return false;
    try {
      const res = await refresh(stored.refreshToken);
      const renewed: Session = {
        ...stored,
        accessToken: res.accessToken,
        refreshToken: res.refreshToken,
        expiresAt: Date.now() + Number(res.expiresIn) * 1000,
      };
      saveSession(renewed);
      adopt(renewed);
      return true;
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unauthenticated) return false;
      throw err;
    }
  };

  const renew = (stale: string): Promise<boolean> => {
    if (pending === null) {
      const run = () => renewLocked(stale);
      const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
      pending = (locks !== undefined ? locks.request(LOCK_NAME, run) : run()).finally(() => {
        pending = null;
      });
    }
    return pending;
  };

  const schedule = (session: Session | null): void => {
    clearTimeout(timer);
    if (session === null || session.refreshToken === "") return;
    const delay = Math.min(Math.max(0, session.expiresAt - Date.now() - AHEAD_MS), MAX_TIMER_MS);
    timer = setTimeout(() => {
      const now = current();
      // Failures here are retried by the next refused call; an ended session ends on its own.
      if (now !== null) void renew(now.accessToken).catch(() => undefined);
    }, delay);
  };

  return { renew, schedule };
}
