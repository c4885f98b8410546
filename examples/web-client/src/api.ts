// gRPC-web clients of the two services.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Endpoints } from "./config";
import { AuthService } from "./gen/todo/auth/v1/auth_pb";
import { TaskService } from "./gen/todo/task/v1/task_pb";

export interface Api {
  auth: Client<typeof AuthService>;
  tasks: Client<typeof TaskService>;
}

/** Every call gives up after this long (sent to the server as `grpc-timeout`). */
const CALL_TIMEOUT_MS = 15_000;

/**
 * Calls never retried after a Refresh: they do not use the access token (Login, SignUp,
 * Refresh), or their UNAUTHENTICATED means a wrong password (ChangePassword, DeleteAccount),
 * which a retry would only count twice against the throttle.
 */
const NO_RENEWAL = new Set(["Login", "SignUp", "Refresh", "ChangePassword", "DeleteAccount"]);

/**
 * Both clients speak gRPC-web in the binary format. `accessToken` is asked for on every call,
 * so logging in or out takes effect at once; when there is a token it travels in the
 * `authorization` header as `Bearer <token>`. A call refused as UNAUTHENTICATED is retried
 * once after `renew` (a Refresh) says a new token is in place.
 */
export function createApi(
  endpoints: Endpoints,
  accessToken: () => string | null,
  renew: (stale: string) => Promise<boolean>,
): Api {
  const bearer: Interceptor = (next) => (req) => {
    const token = accessToken();
    if (token !== null) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const renewing: Interceptor = (next) => async (req) => {
    const sent = accessToken();
    try {
      return await next(req);
    } catch (err) {
      const refused = err instanceof ConnectError && err.code === Code.Unauthenticated;
      if (!refused || sent === null || NO_RENEWAL.has(req.method.name) || !(await renew(sent))) throw err;
      return await next(req);
    }
  };
  const transport = (baseUrl: string) =>
    createGrpcWebTransport({
      baseUrl,
      useBinaryFormat: true,
      interceptors: [renewing, bearer],
      defaultTimeoutMs: CALL_TIMEOUT_MS,
    });
  return {
    auth: createClient(AuthService, transport(endpoints.auth)),
    tasks: createClient(TaskService, transport(endpoints.tasks)),
  };
}
