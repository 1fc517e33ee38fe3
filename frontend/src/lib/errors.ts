/** The contract's error: `{"error": {"code", "message"}}` with an HTTP status. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly fields: Record<string, string> | undefined;
  readonly details: Record<string, unknown>;

  constructor(status: number, code: string, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
    const fields = details.fields;
    this.fields = fields && typeof fields === "object" ? (fields as Record<string, string>) : undefined;
  }
}

export async function errorFromResponse(response: Response): Promise<ApiError> {
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = (body as { error?: Record<string, unknown> } | null)?.error;
  if (error && typeof error.message === "string") {
    return new ApiError(response.status, String(error.code ?? "error"), error.message, error);
  }
  return new ApiError(response.status, "http_" + response.status, fallbackMessage(response.status));
}

function fallbackMessage(status: number): string {
  if (status === 401) return "Your session has ended. Please log in again.";
  if (status === 403) return "You are not allowed to do that.";
  if (status === 404) return "Not found.";
  if (status === 413) return "The file is too large.";
  if (status === 429) return "Too many requests. Please wait a moment and try again.";
  if (status >= 500) return "The server had a problem. Please try again shortly.";
  return `The request failed (HTTP ${status}).`;
}
