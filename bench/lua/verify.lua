-- POST /v1/verify with a JSON body, rotating over the secrets in $SECRETS (one per line); each
-- wrk thread walks the list from its own offset. Optional $SCOPES: a JSON list such as
-- ["droplet:read"]. Requests are formatted once up front when the list is small, so the client
-- spends its CPU on sending, not on Lua string work. With SWEEP=T (T = wrk's thread count) the
-- threads share the list instead (thread k takes k, k+T, k+2T, ...), so one pass of all threads
-- visits every secret once: used to warm the cache. Optional $IP: the client address sent in
-- `ip` (for tokens with an address allowlist). Optional $FORGED: a second list (tokens that were
-- never issued) mixed in, every other request, so half the requests are a flood of forged tokens.
-- With RANDOM=1 each request takes a secret at random instead of walking the list (the cold
-- start: a walk from the list's start would follow the order the store keeps the tokens in, the
-- order the server's warm-up reads them in, and find them cached just ahead of it).
local secrets = {}
for line in io.lines(os.getenv("SECRETS")) do
  secrets[#secrets + 1] = line
end
local forged = nil
if os.getenv("FORGED") then
  forged = {}
  for line in io.lines(os.getenv("FORGED")) do
    forged[#forged + 1] = line
  end
end
local scopes = os.getenv("SCOPES") or "[]"
local ip = os.getenv("IP")
local extra = ip and (',"ip":"' .. ip .. '"') or ""
local sweep = tonumber(os.getenv("SWEEP") or "")
local random = os.getenv("RANDOM") == "1"
local headers = { ["Content-Type"] = "application/json" }
local threads = 0
local prebuilt = nil
local i = 0
local step = 1
local flip = false
local forged_built = false

local function build(s)
  return wrk.format("POST", "/v1/verify", headers, '{"token":"' .. s .. '","scopes":' .. scopes .. extra .. '}')
end

function setup(thread)
  thread:set("offset", sweep and threads or threads * 7919)
  threads = threads + 1
end

function init(args)
  step = sweep or 1
  i = (offset or 0) - step
  if random then
    math.randomseed((offset or 0) + 1)
  end
  if #secrets <= 100000 then
    prebuilt = {}
    for k, s in ipairs(secrets) do
      prebuilt[k] = build(s)
    end
  end
  if forged and #forged <= 100000 then
    for k, s in ipairs(forged) do
      forged[k] = build(s)
    end
    forged_built = true
  end
end


function request()
  if forged then
    flip = not flip
    if flip then
      local f = forged[(i % #forged) + 1]
      return forged_built and f or build(f)
    end
  end
  i = i + step
  local k = (i % #secrets) + 1
  if random then
    k = math.random(#secrets)
  end
  if prebuilt then
    return prebuilt[k]
  end
  return build(secrets[k])
end
