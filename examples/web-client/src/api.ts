// gRPC-web clients of the two services.

import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
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
 * Both clients speak gRPC-web in the binary format. `accessToken` is asked for on every call,
 * so logging in or out takes effect at once; when there is a token it travels in the
 * `authorization` header as `Bearer <token>`.
 */
export function createApi(endpoints: Endpoints, accessToken: () => string | null): Api {
  const bearer: Interceptor = (next) => (req) => {
    const token = accessToken();
    if (token !== null) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = (baseUrl: string) =>
    createGrpcWebTransport({
      baseUrl,
      useBinaryFormat: true,
      interceptors: [bearer],
      defaultTimeoutMs: CALL_TIMEOUT_MS,
    });
  return {
    auth: createClient(AuthService, transport(endpoints.auth)),
    tasks: createClient(TaskService, transport(endpoints.tasks)),
  };
}
