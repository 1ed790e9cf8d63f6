// What needs no server: the token format's known-answer vector, and the version kept with
// keyward's (the workspace version in the root Cargo.toml).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { isWellFormedToken } from "../src/index.js";
import { REPO } from "./helpers.js";

// keyward-core/src/format.rs's SAMPLE: body = bytes 0..32, prefix kwp.
const SAMPLE = "kwp_003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf2mnIEQ";

test("the token format matches keyward-core's known-answer vector", () => {
  assert.ok(isWellFormedToken(SAMPLE));
  assert.ok(isWellFormedToken(`abcdefghijklmnop${SAMPLE.slice(3)}`) === false, "checksum covers the prefix");
  for (const bad of [
    SAMPLE.slice(0, -1),
    `${SAMPLE}x`,
    SAMPLE.replace("kwp", "KWP"),
    SAMPLE.replace("_", "-"),
    SAMPLE.slice(0, -1) + "R",
    `k_${SAMPLE.slice(4)}`,
    `${"a".repeat(17)}_${SAMPLE.slice(4)}`,
  ]) {
    assert.equal(isWellFormedToken(bad), false, bad);
  }
});

test("the package is versioned with keyward (workspace version in Cargo.toml)", () => {
  const cargo = readFileSync(join(REPO, "Cargo.toml"), "utf8");
  const workspace = /^\[workspace\.package\][^[]*?^version\s*=\s*"([^"]+)"/m.exec(cargo);
  assert.ok(workspace?.[1], "no [workspace.package] version in Cargo.toml");
  const pkg = JSON.parse(readFileSync(join(REPO, "clients/typescript/package.json"), "utf8")) as { version: string };
  const lock = JSON.parse(readFileSync(join(REPO, "clients/typescript/package-lock.json"), "utf8")) as { version: string };
  assert.equal(pkg.version, workspace[1]);
  assert.equal(lock.version, workspace[1]);
});

test("the published entry point (package.json exports) resolves to the built dist/", async () => {
  const pkg = await import("keyward");
  for (const name of ["Keyward", "KeywardUnavailableError", "requireScopes", "authorize", "tokens", "users", "isWellFormedToken"]) {
    assert.equal(typeof (pkg as Record<string, unknown>)[name], "function", name);
  }
});
