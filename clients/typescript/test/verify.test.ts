import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, afterEach, before, describe, test } from "node:test";
import { Keyward, KeywardUnavailableError } from "../src/index.js";
import { checkingFetch, OpenApiChecker, type Server, startKeyward } from "./helpers.js";

let server: Server;
let openapi: OpenApiChecker;
let calls = 0;
let openapiDoc: unknown;
const client = (options: ConstructorParameters<typeof Keyward>[0] = {}) =>
  new Keyward({
    url: server.url,
    fetch: (input, init) => {
      calls++;
      return checkingFetch(openapi)(input, init);
    },
    ...options,
  });

before(async () => {
  server = await startKeyward();
  openapi = await OpenApiChecker.load(server.url);
  openapiDoc = await (await fetch(`${server.url}/openapi.json`)).json();
});
after(() => server.stop());
afterEach(() => assert.deepEqual(openapi.violations, [], "keyward's answers drifted from /openapi.json"));

describe("verify", () => {
  test("an active token: owner, scopes, expiry, id", async () => {
    const { secret, id } = server.token("alice", ["droplet:read", "volume:*"]);
    const answer = await client().verify(secret, { scopes: "droplet:read", ip: "203.0.113.9" });
    assert.equal(answer.active, true);
    assert.equal(answer.tokenId, id);
    assert.equal(answer.owner?.name, "alice");
    assert.match(answer.owner?.id ?? "", /^usr_/);
    assert.equal(answer.owner?.externalId, null, "alice was added without an external id");
    assert.deepEqual([...(answer.scopes ?? [])].sort(), ["droplet:read", "volume:*"]);
    assert.ok(answer.expiresAt instanceof Date && answer.expiresAt.getTime() > Date.now());
    assert.equal(answer.reason, undefined);
    // keyward decides wildcards: volume:* grants volume:create.
    assert.equal((await client().verify(secret, { scopes: ["volume:create"] })).active, true);
  });

  test("a token lacking a scope: insufficient_scope", async () => {
    const { secret } = server.token("alice", ["droplet:read"]);
    assert.deepEqual(await client().verify(secret, { scopes: ["droplet:read", "droplet:delete"] }), {
      active: false,
      reason: "insufficient_scope",
    });
  });

  test("unknown and revoked tokens are inactive, with keyward's reason", async () => {
    const { secret, id } = server.token("alice", ["droplet:read"]);
    server.cli("token", "revoke", id);
    assert.deepEqual(await client().verify(secret), { active: false, reason: "revoked" });
    // A well-formed token keyward never issued (the format's known-answer sample).
    const unknown = "kwp_003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf2mnIEQ";
    assert.deepEqual(await client().verify(unknown), { active: false, reason: "unknown" });
  });

  test("malformed tokens are refused without a round trip", async () => {
    const { secret } = server.token("alice", ["droplet:read"]);
    const before = calls;
    const k = client();
    for (const bad of ["", "kwp_", "not a token", secret.slice(0, -1) + (secret.endsWith("A") ? "B" : "A"), `Kwp${secret.slice(3)}`]) {
      assert.deepEqual(await k.verify(bad), { active: false, reason: "malformed" }, bad);
    }
    assert.equal(calls, before);
  });

  test("the owner's external id: a string, null, or absent (a keyward older than the field)", async () => {
    const { secret } = server.token("alice", ["droplet:read"]);
    for (const [owner, externalId] of [
      [{ id: "usr_1", name: "alice", external_id: "acct-42" }, "acct-42"],
      [{ id: "usr_1", name: "alice", external_id: null }, null],
      [{ id: "usr_1", name: "alice" }, null],
    ] as const) {
      const k = new Keyward({
        url: "http://keyward.invalid",
        ttl: 0,
        fetch: async () => Response.json({ active: true, token_id: "tok_1", owner, scopes: [], expires_at: null }),
      });
      const answer = await k.verify(secret);
      assert.deepEqual(answer.owner, { id: "usr_1", name: "alice", externalId }, JSON.stringify(owner));
    }
  });

  test("a scope that is not resource:action is a TypeError, not an answer", async () => {
    const { secret } = server.token("alice", ["droplet:read"]);
    await assert.rejects(client().verify(secret, { scopes: "droplet read" }), TypeError);
  });
});

describe("cache", () => {
  test("a revoked token still passes within the TTL by default, and is refused after it", async () => {
    let now = Date.now();
    const k = client({ now: () => now });
    const { secret, id } = server.token("bob", ["droplet:read"]);
    assert.equal((await k.verify(secret, { scopes: "droplet:read" })).active, true);
    server.cli("token", "revoke", id);
    const asked = calls;
    assert.equal((await k.verify(secret, { scopes: "droplet:read" })).active, true, "kept for 5 s");
    assert.equal(calls, asked, "answered from the cache");
    now += 5_000;
    assert.deepEqual(await k.verify(secret, { scopes: "droplet:read" }), { active: false, reason: "revoked" });
  });

  test("with ttl 0 a revocation is seen at once", async () => {
    const k = client({ ttl: 0 });
    const { secret, id } = server.token("bob", ["droplet:read"]);
    assert.equal((await k.verify(secret)).active, true);
    server.cli("token", "revoke", id);
    assert.deepEqual(await k.verify(secret), { active: false, reason: "revoked" });
  });

  test("refusals are never kept; each set of scopes is asked once", async () => {
    const k = client();
    const { secret } = server.token("bob", ["droplet:read"]);
    const start = calls;
    assert.equal((await k.verify(secret, { scopes: "droplet:delete" })).active, false);
    assert.equal((await k.verify(secret, { scopes: "droplet:delete" })).active, false);
    assert.equal(calls - start, 2, "refusals asked every time");
    await k.verify(secret, { scopes: ["droplet:read"] });
    await k.verify(secret, { scopes: ["droplet:read", "droplet:read"] });
    await k.verify(secret);
    assert.equal(calls - start, 4, "one ask for [droplet:read], one for no scopes");
  });

  test("a kept answer whose token has expired since is refused locally", async () => {
    let now = Date.now();
    const k = client({ now: () => now, ttl: 10 * 86_400_000 });
    const { secret } = server.token("bob", ["droplet:read"], "1h");
    const answer = await k.verify(secret);
    assert.equal(answer.active, true);
    const asked = calls;
    now = (answer.expiresAt as Date).getTime();
    assert.deepEqual(await k.verify(secret), { active: false, reason: "expired" });
    assert.equal(calls, asked);
  });

  test("capacity: the least recently used answer goes first", async () => {
    const k = client({ capacity: 1 });
    const a = server.token("carol", ["droplet:read"]).secret;
    const b = server.token("carol", ["droplet:read"]).secret;
    await k.verify(a);
    await k.verify(b);
    const start = calls;
    await k.verify(b);
    assert.equal(calls, start, "b is kept");
    await k.verify(a);
    assert.equal(calls, start + 1, "a was evicted");
  });
});

describe("failing closed", () => {
  const secretOf = () => server.token("dave", ["droplet:read"]).secret;

  test("unreachable keyward throws KeywardUnavailableError", async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const { port } = closed.address() as AddressInfo;
    await new Promise((r) => closed.close(r));
    const k = new Keyward({ url: `http://127.0.0.1:${port}` });
    await assert.rejects(k.verify(secretOf()), KeywardUnavailableError);
  });

  for (const [what, handler] of [
    ["a 500", (res: import("node:http").ServerResponse) => { res.statusCode = 500; res.end('{"error":{"code":"internal","message":"x"}}'); }],
    ["a 200 that is not JSON", (res: import("node:http").ServerResponse) => res.end("<html>")],
    ["a 200 that is not an answer", (res: import("node:http").ServerResponse) => res.end('{"active":true}')],
    [
      "an owner whose external id is not a string",
      (res: import("node:http").ServerResponse) =>
        res.end('{"active":true,"token_id":"tok_1","owner":{"id":"usr_1","name":"n","external_id":42},"scopes":[]}'),
    ],
    ["no answer in time", () => undefined],
  ] as const) {
    test(`${what} throws KeywardUnavailableError`, async () => {
      const fake = createServer((_req, res) => handler(res));
      await new Promise<void>((r) => fake.listen(0, "127.0.0.1", r));
      try {
        const k = new Keyward({ url: `http://127.0.0.1:${(fake.address() as AddressInfo).port}`, timeout: 300 });
        await assert.rejects(k.verify(secretOf()), KeywardUnavailableError);
      } finally {
        fake.closeAllConnections();
        await new Promise((r) => fake.close(r));
      }
    });
  }
});

test("KEYWARD_URL is the default URL", async () => {
  const saved = process.env["KEYWARD_URL"];
  try {
    delete process.env["KEYWARD_URL"];
    assert.throws(() => new Keyward(), TypeError);
    process.env["KEYWARD_URL"] = `${server.url}/`;
    const k = new Keyward();
    assert.equal(k.url, server.url);
    assert.equal((await k.verify(server.token("erin", ["droplet:read"]).secret)).active, true);
  } finally {
    if (saved === undefined) delete process.env["KEYWARD_URL"];
    else process.env["KEYWARD_URL"] = saved;
  }
});

test("the OpenAPI check is not vacuous: a drifted answer is reported", () => {
  assert.ok(openapi.checked.length > 0);
  const drift = new OpenApiChecker(JSON.parse(JSON.stringify(openapiDoc)));
  assert.notEqual(drift.check("POST", "/v1/verify", 200, { active: true, token_id: 1 }), "");
  assert.notEqual(drift.check("POST", "/v1/verify", 200, { active: false, reason: "bored" }), "");
  assert.notEqual(drift.check("POST", "/v1/verify", 418, {}), "");
  assert.equal(drift.check("POST", "/v1/verify", 200, { active: false, reason: "revoked" }), "");
});
