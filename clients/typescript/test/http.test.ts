// The Express middleware and the Fetch API function, in front of the real keyward.

import assert from "node:assert/strict";
import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, afterEach, before, describe, test } from "node:test";
import express from "express";
import { authorize, Keyward, keywardAnswer, requireScopes } from "../src/index.js";
import { checkingFetch, OpenApiChecker, type Server, startKeyward } from "./helpers.js";

let server: Server;
let openapi: OpenApiChecker;
let keyward: Keyward;
let unreachable: Keyward;

before(async () => {
  server = await startKeyward();
  openapi = await OpenApiChecker.load(server.url);
  // ttl 0: each request asks keyward, so a revocation shows at once.
  keyward = new Keyward({ url: server.url, ttl: 0, fetch: checkingFetch(openapi) });
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
  const { port } = closed.address() as AddressInfo;
  await new Promise((r) => closed.close(r));
  unreachable = new Keyward({ url: `http://127.0.0.1:${port}` });
});
after(() => server.stop());
afterEach(() => assert.deepEqual(openapi.violations, [], "keyward's answers drifted from /openapi.json"));

const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });

describe("Express requireScopes", () => {
  let app: HttpServer;
  let base: string;

  before(async () => {
    const api = express();
    api.set("trust proxy", false);
    api.get("/droplets", requireScopes("droplet:read", { keyward }), (req, res) => {
      res.json({ owner: req.keyward?.owner.name, same: keywardAnswer(req) === req.keyward });
    });
    api.get("/down", requireScopes("droplet:read", { keyward: unreachable }), (_req, res) => {
      res.json({ reached: true });
    });
    app = api.listen(0, "127.0.0.1");
    await new Promise((r) => app.once("listening", r));
    base = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;
  });
  after(() => new Promise((r) => app.close(r)));

  test("200 with the scope, and the answer on req.keyward", async () => {
    const { secret } = server.token("alice", ["droplet:*"]);
    const r = await fetch(`${base}/droplets`, { headers: bearer(secret) });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { owner: "alice", same: true });
  });

  test("401 without a token: a bare challenge", async () => {
    for (const headers of [{}, { authorization: "Basic YTpi" }, { authorization: "Bearer" }]) {
      const r = await fetch(`${base}/droplets`, { headers });
      assert.equal(r.status, 401);
      assert.equal(r.headers.get("www-authenticate"), 'Bearer realm="keyward"');
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, "unauthenticated");
    }
  });

  test("401 invalid_token for a revoked or malformed token", async () => {
    const { secret, id } = server.token("alice", ["droplet:read"]);
    server.cli("token", "revoke", id);
    for (const token of [secret, "kwp_nonsense"]) {
      const r = await fetch(`${base}/droplets`, { headers: bearer(token) });
      assert.equal(r.status, 401);
      assert.match(r.headers.get("www-authenticate") ?? "", /^Bearer realm="keyward", error="invalid_token"/);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, "invalid_token");
    }
  });

  test("403 insufficient_scope for a token without the scope", async () => {
    const { secret } = server.token("alice", ["volume:read"]);
    const r = await fetch(`${base}/droplets`, { headers: bearer(secret) });
    assert.equal(r.status, 403);
    assert.match(r.headers.get("www-authenticate") ?? "", /error="insufficient_scope".*scope="droplet:read"/);
  });

  test("503 when keyward cannot answer, never the route", async () => {
    const { secret } = server.token("alice", ["droplet:read"]);
    const r = await fetch(`${base}/down`, { headers: bearer(secret) });
    assert.equal(r.status, 503);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, "unavailable");
  });

  test("a scope typo stops the application when the route is declared", () => {
    assert.throws(() => requireScopes("droplet-read", { keyward }), TypeError);
  });
});

describe("authorize(Request)", () => {
  const request = (secret?: string) =>
    new Request("http://api.example/droplets", secret === undefined ? {} : { headers: bearer(secret) });

  test("allowed: the answer", async () => {
    const { secret } = server.token("bob", ["droplet:read"]);
    const auth = await authorize(request(secret), "droplet:read", { keyward, ip: "198.51.100.7" });
    assert.ok(auth.ok);
    assert.equal(auth.answer.owner.name, "bob");
  });

  test("refused: a ready Response (401, 403, 503)", async () => {
    const { secret } = server.token("bob", ["droplet:read"]);
    const cases: [Request, string[], Keyward, number][] = [
      [request(), ["droplet:read"], keyward, 401],
      [request(secret), ["droplet:delete"], keyward, 403],
      [request(secret), ["droplet:read"], unreachable, 503],
    ];
    for (const [req, scopes, k, status] of cases) {
      const auth = await authorize(req, scopes, { keyward: k });
      assert.ok(!auth.ok);
      assert.equal(auth.response.status, status);
      assert.equal(auth.response.headers.get("content-type"), "application/json");
      if (status !== 503) assert.match(auth.response.headers.get("www-authenticate") ?? "", /^Bearer realm="keyward"/);
    }
  });

  test("a Hono-style handler", async () => {
    const handler = async (req: Request): Promise<Response> => {
      const auth = await authorize(req, "droplet:read", { keyward });
      if (!auth.ok) return auth.response;
      return Response.json({ hello: auth.answer.owner.name });
    };
    const { secret } = server.token("bob", ["droplet:read"]);
    assert.deepEqual(await (await handler(request(secret))).json(), { hello: "bob" });
    assert.equal((await handler(request())).status, 401);
  });
});
