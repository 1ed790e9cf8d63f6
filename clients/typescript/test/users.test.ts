// A platform's backend managing users and minting their tokens, acting as an admin service
// account's token made with the command line; every answer checked against /openapi.json.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, afterEach, before, test } from "node:test";
import { Keyward, KeywardApiError, KeywardUnavailableError, users } from "../src/index.js";
import { checkingFetch, OpenApiChecker, type Server, startKeyward } from "./helpers.js";

const BACKEND_SCOPES = ["users:read", "users:create", "users:update", "users:delete", "tokens:issue"];

let server: Server;
let openapi: OpenApiChecker;
let keyward: Keyward;
let backend: ReturnType<typeof users>;

before(async () => {
  server = await startKeyward();
  openapi = await OpenApiChecker.load(server.url);
  keyward = new Keyward({ url: server.url, ttl: 0, fetch: checkingFetch(openapi) });
  server.addUser("platform", "--service", "--admin");
  backend = users(keyward, server.token("platform", BACKEND_SCOPES, "2d").secret, { fetch: checkingFetch(openapi) });
});
after(() => server.stop());
afterEach(() => assert.deepEqual(openapi.violations, [], "keyward's answers drifted from /openapi.json"));

/** Rejects with KeywardApiError of this status (and code, if given). */
async function refused(p: Promise<unknown>, status: number, code?: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof KeywardApiError, String(e));
    assert.equal(e.status, status);
    if (code !== undefined) assert.equal(e.code, code);
    return true;
  });
}

test("a platform user: create, find by external id, mint a token, update, delete", async () => {
  const carol = await backend.create({ name: "carol", externalId: "acct-carol", email: "carol@example.com" });
  assert.match(carol.id, /^usr_/);
  assert.equal(carol.name, "carol");
  assert.equal(carol.externalId, "acct-carol");
  assert.equal(carol.email, "carol@example.com");
  assert.equal(carol.kind, "person");
  assert.equal(carol.admin, false);
  assert.equal(carol.disabledAt, null);
  assert.ok(carol.createdAt instanceof Date && !Number.isNaN(carol.createdAt.getTime()));
  assert.deepEqual(await backend.findByExternalId("acct-carol"), carol);
  assert.deepEqual(await backend.get(carol.id), carol);

  const { token, secret } = await backend.issueToken(carol.id, { name: "cli", scopes: ["droplet:read"], expires: "1d" });
  assert.equal(token.owner, carol.id);
  assert.deepEqual(token.scopes, ["droplet:read"]);
  const answer = await keyward.verify(secret, { scopes: "droplet:read" });
  assert.equal(answer.active, true);
  assert.deepEqual(answer.owner, { id: carol.id, name: "carol", externalId: "acct-carol" });

  const moved = await backend.update(carol.id, { externalId: "acct2-carol", email: null });
  assert.equal(moved.externalId, "acct2-carol");
  assert.equal(moved.email, null);
  assert.equal(moved.name, "carol");
  assert.equal((await keyward.verify(secret)).owner?.externalId, "acct2-carol");
  assert.equal(await backend.findByExternalId("acct-carol"), null);

  await backend.delete(carol.id);
  assert.deepEqual(await keyward.verify(secret), { active: false, reason: "revoked" });
  await refused(backend.get(carol.id), 404);
  assert.equal(await backend.findByExternalId("acct2-carol"), null);
});

test("a disabled user's tokens are refused until enabled again", async () => {
  const robot = await backend.create({ name: "robot", kind: "service" });
  assert.equal(robot.kind, "service");
  assert.equal(robot.externalId, null);
  const { secret } = await backend.issueToken(robot.id, { name: "deploy", scopes: ["droplet:*"] });
  assert.ok((await backend.update(robot.id, { disabled: true })).disabledAt instanceof Date);
  assert.deepEqual(await keyward.verify(secret), { active: false, reason: "owner_disabled" });
  assert.equal((await backend.update(robot.id, { disabled: false })).disabledAt, null);
  assert.equal((await keyward.verify(secret, { scopes: "droplet:read" })).active, true);
});

test("a token without users:create gets 403 insufficient_scope", async () => {
  const reader = users(keyward, server.token("platform", ["users:read"]).secret, { fetch: checkingFetch(openapi) });
  await refused(reader.create({ name: "dave" }), 403, "insufficient_scope");
  assert.ok((await reader.list({ limit: 1 })).users.length > 0, "what it holds, it may do");
});

test("a taken name or external id is a 409 conflict", async () => {
  await backend.create({ name: "erin", externalId: "acct-erin" });
  await refused(backend.create({ name: "erin" }), 409, "conflict");
  await refused(backend.create({ name: "frank", externalId: "acct-erin" }), 409);
});

test("listing follows next across pages, newest first", async () => {
  const made = new Set<string>();
  for (let i = 0; i < 5; i++) made.add((await backend.create({ name: `page-${i}` })).id);
  const first = await backend.list({ limit: 2 });
  assert.equal(first.users.length, 2);
  assert.equal(typeof first.next, "string");
  const second = await backend.list({ limit: 2, before: first.next ?? "" });
  assert.ok(second.users.every((u) => !first.users.some((f) => f.id === u.id)));

  const listed: string[] = [];
  const created: number[] = [];
  for await (const user of backend.iterate({ pageSize: 2 })) {
    listed.push(user.id);
    created.push(user.createdAt.getTime());
  }
  assert.ok([...made].every((id) => listed.includes(id)));
  assert.equal(new Set(listed).size, listed.length);
  assert.deepEqual(created, [...created].sort((a, b) => b - a));
});

test("keyward unreachable: KeywardUnavailableError", async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
  const { port } = closed.address() as AddressInfo;
  await new Promise((r) => closed.close(r));
  const nowhere = users(new Keyward({ url: `http://127.0.0.1:${port}` }), "kwp_x");
  await assert.rejects(nowhere.list(), KeywardUnavailableError);
});
