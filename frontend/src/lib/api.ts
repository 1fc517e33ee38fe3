import { ApiError, errorFromResponse } from "./errors";
import { getAccessToken, refreshSession, refreshWasTransient, sessionExpired } from "./session";

export { ApiError, errorFromResponse };

export interface RequestOptions {
  method?: string;
  body?: unknown;
  /** Send the access token (default true). */
  auth?: boolean;
  signal?: AbortSignal;
}

/** JSON request to the gateway. With `auth`, a 401 triggers one silent refresh and one retry. */
export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const { method = "GET", body, auth = true, signal } = options;
  const send = (token: string | null) => {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && token) headers.Authorization = `Bearer ${token}`;
    return fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
  };
  let response: Response;
  try {
    response = await send(auth ? getAccessToken() : null);
  } catch (error) {
    if ((error as Error).name === "AbortError") throw error;
    throw new ApiError(0, "network_error", "Cannot reach the server. Check your connection and try again.");
  }
  if (response.status === 401 && auth) {
    const refreshed = await refreshSession();
    if (!refreshed) {
      if (!refreshWasTransient()) sessionExpired();
      throw await errorFromResponse(response);
    }
    response = await send(getAccessToken());
    if (response.status === 401) {
      sessionExpired();
    }
  }
  if (!response.ok) throw await errorFromResponse(response);
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}
