// The sleepy-repo extension: starts `sleepy-repo lsp` over stdio for the workspace and adds
// three palette commands that forward to the server's `sleepy.*` commands.
//
// The server advertises `sleepy.ask`, `sleepy.refresh` and `sleepy.status` in
// `executeCommandProvider`, and vscode-languageclient registers those ids itself. So the
// palette commands here use their own ids (`sleepyRepo.*`) and send
// `workspace/executeCommand` to the server.

import * as vscode from "vscode";
import {
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";
import { render } from "./render";

/** The server's command ids, keyed by the palette command that forwards to each. */
export const FORWARDED: Readonly<Record<string, string>> = {
  "sleepyRepo.ask": "sleepy.ask",
  "sleepyRepo.refresh": "sleepy.refresh",
  "sleepyRepo.status": "sleepy.status",
};

const LANGUAGES = [
  "python",
  "javascript",
  "javascriptreact",
  "typescript",
  "typescriptreact",
  "go",
  "rust",
];

let client: LanguageClient | undefined;
let output: vscode.OutputChannel | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("sleepy-repo");
  context.subscriptions.push(output);

  context.subscriptions.push(
    vscode.commands.registerCommand("sleepyRepo.ask", ask),
    vscode.commands.registerCommand("sleepyRepo.refresh", () => run("sleepyRepo.refresh", [])),
    vscode.commands.registerCommand("sleepyRepo.status", () => run("sleepyRepo.status", [])),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("sleepyRepo")) {
        await restart();
      }
    }),
  );
  await start();
}

export async function deactivate(): Promise<void> {
  await stop();
}

/** `initializationOptions` from the settings; unset settings are left out. */
export function initializationOptions(
  config: vscode.WorkspaceConfiguration,
): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  const backend = config.get<string>("backend", "");
  if (backend) {
    options.backend = backend;
  }
  const idle = config.get<number>("idleSeconds", 0);
  if (idle > 0) {
    options.idleSeconds = idle;
  }
  return options;
}

async function start(): Promise<void> {
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!folder || folder.uri.scheme !== "file") {
    output?.appendLine("sleepy-repo: no local workspace folder; the server is not started.");
    return;
  }
  const config = vscode.workspace.getConfiguration("sleepyRepo", folder.uri);
  const executable = {
    command: config.get<string>("path", "sleepy-repo") || "sleepy-repo",
    args: ["lsp"],
    transport: TransportKind.stdio,
    options: { cwd: folder.uri.fsPath },
  };
  const serverOptions: ServerOptions = { run: executable, debug: executable };
  const clientOptions: LanguageClientOptions = {
    documentSelector: LANGUAGES.map((language) => ({ scheme: "file", language })),
    workspaceFolder: folder,
    initializationOptions: initializationOptions(config),
    outputChannel: output,
    middleware: {
      // the code lenses run the server's sleepy.notes: show what it returns
      executeCommand: async (command, args, next) => {
        const result: unknown = await next(command, args);
        if (command === "sleepy.notes") {
          await show(command, result);
        }
        return result;
      },
    },
  };
  client = new LanguageClient("sleepyRepo", "sleepy-repo", serverOptions, clientOptions);
  try {
    await client.start();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    void vscode.window.showErrorMessage(
      `sleepy-repo: could not start "${executable.command} lsp": ${message}. ` +
        "Install it (pip install sleepy-repo) or set sleepyRepo.path.",
    );
    client = undefined;
  }
}

async function stop(): Promise<void> {
  const running = client;
  client = undefined;
  if (running) {
    await running.stop();
  }
}

async function restart(): Promise<void> {
  await stop();
  await start();
}

async function ask(question?: unknown): Promise<void> {
  let text = typeof question === "string" ? question : undefined;
  if (!text) {
    const selection = vscode.window.activeTextEditor?.selection;
    const selected = selection?.isEmpty
      ? ""
      : vscode.window.activeTextEditor?.document.getText(selection) ?? "";
    text = await vscode.window.showInputBox({
      prompt: "Ask about this repository",
      placeHolder: "Where is the retry backoff computed?",
      value: selected,
    });
  }
  if (!text) {
    return;
  }
  await run("sleepyRepo.ask", [text]);
}

/** Forwards a palette command to the server and shows what it returned. */
async function run(paletteId: string, args: unknown[]): Promise<void> {
  if (!client) {
    void vscode.window.showErrorMessage("sleepy-repo: the language server is not running.");
    return;
  }
  const command = FORWARDED[paletteId];
  try {
    const result: unknown = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: `sleepy-repo: ${command}` },
      () => client!.sendRequest(ExecuteCommandRequest.type, { command, arguments: args }),
    );
    await show(command, result);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    void vscode.window.showErrorMessage(`sleepy-repo: ${command} failed: ${message}`);
  }
}

async function show(command: string, result: unknown): Promise<void> {
  const body = render(result);
  if (command === "sleepy.refresh" && body.length < 200 && !body.includes("\n")) {
    void vscode.window.showInformationMessage(`sleepy-repo: ${body}`);
    return;
  }
  const content = command === "sleepy.notes" ? `${body}\n` : `# ${command}\n\n${body}\n`;
  const document = await vscode.workspace.openTextDocument({ language: "markdown", content });
  await vscode.window.showTextDocument(document, {
    preview: true,
    viewColumn: vscode.ViewColumn.Beside,
  });
}
