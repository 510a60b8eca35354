// Markdown for the results of the server's commands and requests. No `vscode` import, so
// it runs (and is tested) under plain Node.

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function oneLine(text: unknown): string {
  return String(text ?? "").replace(/\s+/g, " ");
}

/** `path:start-end` of a citation or item. */
export function citation(item: Json): string {
  const path = String(item.path ?? "?");
  const start = item.start_line;
  const end = item.end_line;
  if (start !== undefined && end !== undefined && end !== start) {
    return `${path}:${start}-${end}`;
  }
  return start !== undefined ? `${path}:${start}` : path;
}

/** A context or note item as one markdown line: `path:lines · symbol (kind): text`. */
export function renderItem(item: Json): string {
  let head = citation(item);
  if (typeof item.symbol === "string") {
    head += ` · ${item.symbol}`;
  }
  let flags = "";
  if (item.generated === true) {
    flags += " (generated)";
  }
  if (item.stale === true) {
    flags += " ⚠ stale";
  }
  let text = oneLine(item.text);
  if (typeof item.question === "string") {
    text = `Q: ${oneLine(item.question)} ${text}`;
  }
  return `- ${head} (${String(item.kind ?? "?")})${flags}: ${text}`;
}

function renderContext(context: Json): string {
  const items = Array.isArray(context.items) ? context.items.filter(isObject) : [];
  return (
    `## Context (${String(context.tokens)} of ${String(context.budget)} tokens)\n\n` +
    items.map(renderItem).join("\n")
  );
}

/**
 * Markdown for a command's result: a string as is; an `ask` result as its answer (or
 * message) and the cited context; a `sleepy/context` result as its items; a module's
 * notes (`sleepy.notes`) as their items; else the JSON.
 */
export function render(result: unknown): string {
  if (typeof result === "string") {
    return result;
  }
  if (isObject(result)) {
    if (isObject(result.context) && Array.isArray(result.context.items)) {
      const text = typeof result.answer === "string" ? result.answer : result.message;
      return `${String(text ?? "")}\n\n${renderContext(result.context)}`;
    }
    if (Array.isArray(result.items)) {
      return renderContext(result);
    }
    if (Array.isArray(result.notes)) {
      const notes = result.notes.filter(isObject).map((note) => {
        const items = Array.isArray(note.items) ? note.items.filter(isObject) : [];
        const title = `${String(note.backend)} ${String(note.model ?? "")}`.trim();
        return `## ${title}\n\n${items.map(renderItem).join("\n")}`;
      });
      return [`# ${String(result.path)}`, ...notes].join("\n\n");
    }
    for (const key of ["markdown", "text", "message"]) {
      const value = result[key];
      if (typeof value === "string") {
        return value;
      }
    }
  }
  return "```json\n" + JSON.stringify(result, null, 2) + "\n```";
}
