// The real keyward binary for the tests: a fresh data directory, `serve` on a port the server
// picks (port 0, read back from its "listening on" line), and the command line on the same data.
// Every answer the client receives goes through `checkingFetch`, which validates it against the
// served /openapi.json.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";

/** The repository root (this file runs as build/test/helpers.js under clients/typescript). */
export const REPO = fileURLToPath(new URL("../../../../", import.meta.url));

const BIN = process.env["KEYWARD_BIN"] ?? join(REPO, "target/debug/keyward");

export interface Server {
  url: string;
  /** Runs the keyward command line on the server's data directory; its stdout. */
  cli(...args: string[]): string;
  /** Adds a user with `keyward user add <name> <flags…>` (`--service`, `--admin`, …). */
  addUser(name: string, ...flags: string[]): void;
  /** A user (added if need be) and a token of theirs with these scopes: its secret and id. */
  token(user: string, scopes: string[], expires?: string): { secret: string; id: string };
  stop(): Promise<void>;
}

const env = (dataDir: string): NodeJS.ProcessEnv => {
  const e: NodeJS.ProcessEnv = { ...process.env, KEYWARD_DATA_DIR: dataDir, KEYWARD_LOG: "warn" };
  delete e["KEYWARD_DATABASE_URL"];
  delete e["KEYWARD_CONFIG"];
  return e;
};

export async function startKeyward(): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "keyward-ts-"));
  const data = join(dir, "data");
  const cli = (...args: string[]): string =>
    execFileSync(BIN, args, { env: env(data), encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const users = new Set<string>();
  const child: ChildProcess = spawn(BIN, ["serve", "--listen", "127.0.0.1:0"], {
    env: env(data),
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (chunk: string) => {
      out += chunk;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m?.[1] !== undefined) resolve(m[1]);
    });
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`keyward (${BIN}) exited with ${code}: ${out}`)));
  });
  for (let i = 0; ; i++) {
    const ready = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ready) break;
    if (i > 100) throw new Error("keyward never became ready");
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    cli,
    addUser(name, ...flags) {
      cli("user", "add", name, ...flags);
      users.add(name);
    },
    token(user, scopes, expires = "1d") {
      if (!users.has(user)) {
        cli("user", "add", user);
        users.add(user);
      }
      const args = ["token", "create", "--user", user, "--name", `t${Math.random()}`, "--expires", expires, "--json"];
      for (const s of scopes) args.push("--scope", s);
      const issued = JSON.parse(cli(...args)) as { secret: string; token: { id: string } };
      return { secret: issued.secret, id: issued.token.id };
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Validates keyward's answers against the response schemas of its own OpenAPI document. */
export class OpenApiChecker {
  readonly #doc: Record<string, unknown>;
  readonly #ajv: Ajv2020;
  /** Every answer checked, and what was wrong with those that drifted. */
  readonly checked: string[] = [];
  readonly violations: string[] = [];

  constructor(doc: Record<string, unknown>) {
    this.#doc = { ...doc, $id: "https://keyward.invalid/openapi.json" };
    this.#ajv = new Ajv2020({ strict: false, allErrors: true });
    (addFormatsModule as unknown as (ajv: Ajv2020) => void)(this.#ajv);
    this.#ajv.addSchema(this.#doc);
  }

  static async load(url: string): Promise<OpenApiChecker> {
    const r = await fetch(`${url}/openapi.json`);
    return new OpenApiChecker((await r.json()) as Record<string, unknown>);
  }

  /** Checks one answer; returns what is wrong with it ('' if nothing). */
  check(method: string, pathname: string, status: number, body: unknown): string {
    const paths = this.#doc["paths"] as Record<string, Record<string, unknown>>;
    const template = Object.keys(paths).find((t) => matches(t, pathname));
    const what = `${method} ${pathname} ${status}`;
    this.checked.push(what);
    let problem = "";
    if (template === undefined) {
      problem = `${what}: the path is not in the OpenAPI document`;
    } else {
      const op = paths[template]?.[method.toLowerCase()] as
        | { responses?: Record<string, { content?: Record<string, { schema?: unknown }> }> }
        | undefined;
      const response = op?.responses?.[String(status)];
      const schema = response?.content?.["application/json"]?.schema;
      if (op === undefined) problem = `${what}: the method is not in the OpenAPI document`;
      else if (response === undefined) problem = `${what}: the status is not in the OpenAPI document`;
      else if (schema !== undefined) {
        const pointer = ["paths", template, method.toLowerCase(), "responses", String(status), "content", "application/json", "schema"]
          .map((p) => encodeURIComponent(p.replaceAll("~", "~0").replaceAll("/", "~1")))
          .join("/");
        const validate = this.#ajv.compile({ $ref: `https://keyward.invalid/openapi.json#/${pointer}` });
        if (!validate(body)) problem = `${what}: ${this.#ajv.errorsText(validate.errors)} in ${JSON.stringify(body)}`;
      }
    }
    if (problem !== "") this.violations.push(problem);
    return problem;
  }
}

function matches(template: string, pathname: string): boolean {
  const re = new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`);
  // A literal path (/v1/tokens/self) wins over a template that also matches it.
  return re.test(pathname);
}

/** A `fetch` that checks every JSON answer against the OpenAPI document before handing it on. */
export function checkingFetch(checker: OpenApiChecker): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    const method = init?.method ?? (input instanceof Request ? input.method : "GET");
    const text = await response.clone().text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // Not JSON: the schema check reports it.
    }
    checker.check(method, url.pathname, response.status, body);
    return response;
  };
}
