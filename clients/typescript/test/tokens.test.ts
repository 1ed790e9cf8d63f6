// Management over the HTTP API, acting as a token with tokens:*; every answer checked against
// /openapi.json.

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import { Keyward, KeywardApiError, tokens } from "../src/index.js";
import { checkingFetch, OpenApiChecker, type Server, startKeyward } from "./helpers.js";

let server: Server;
let openapi: OpenApiChecker;

before(async () => {
  server = await startKeyward();
  openapi = await OpenApiChecker.load(server.url);
});
after(() => server.stop());
afterEach(() => assert.deepEqual(openapi.violations, [], "keyward's answers drifted from /openapi.json"));

test("create, list, get, rename, regenerate, revoke", async () => {
  const keyward = new Keyward({ url: server.url, ttl: 0, fetch: checkingFetch(openapi) });
  const admin = server.token("alice", ["tokens:*", "droplet:*"]);
  const manage = tokens(keyward, admin.secret, { fetch: checkingFetch(openapi) });

  const made = await manage.create({ name: "ci", scopes: ["droplet:read"], expires: "1d" });
  assert.equal(made.token.name, "ci");
  assert.deepEqual(made.token.scopes, ["droplet:read"]);
  assert.ok(made.token.expiresAt instanceof Date);
  assert.equal((await keyward.verify(made.secret, { scopes: "droplet:read" })).active, true);

  const page = await manage.list({ limit: 1 });
  assert.equal(page.tokens.length, 1);
  assert.equal(typeof page.next, "string");
  assert.equal((await manage.get(made.token.id)).id, made.token.id);
  assert.equal((await manage.rename(made.token.id, "deploy")).name, "deploy");

  const rolled = await manage.regenerate(made.token.id);
  assert.notEqual(rolled.secret, made.secret);
  assert.equal((await keyward.verify(made.secret)).active, false, "the old secret is refused");
  assert.equal((await keyward.verify(rolled.secret)).active, true);

  const revoked = await manage.revoke(made.token.id, "done");
  assert.equal(revoked.state, "revoked");
  assert.deepEqual(await keyward.verify(rolled.secret), { active: false, reason: "revoked" });

  await assert.rejects(manage.get("tok_01ARZ3NDEKTSV4RRFFQ69G5FAV"), (e: unknown) => {
    assert.ok(e instanceof KeywardApiError);
    assert.equal(e.status, 404);
    return true;
  });
  const weak = tokens(keyward, server.token("alice", ["droplet:read"]).secret, { fetch: checkingFetch(openapi) });
  await assert.rejects(weak.create({ name: "x", scopes: ["droplet:read"] }), (e: unknown) => e instanceof KeywardApiError && e.status === 403);
});
