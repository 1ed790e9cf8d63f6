-- A POST with a fixed JSON body ($BODY) and optional bearer ($BEARER) to the URL's path.
local body = os.getenv("BODY") or "{}"
local bearer = os.getenv("BEARER")
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
if bearer and bearer ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. bearer
end
