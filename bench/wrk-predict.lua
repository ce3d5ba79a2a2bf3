-- wrk script for the load benchmark of `digits serve`: POSTs one file to /api/predict, by
-- default bench/drawn-7-56px.png (a drawing as the page sends it: a 56x56 PNG). Usage:
--   digits serve &
--   wrk -t2 -c64 -d60s --latency -s bench/wrk-predict.lua http://127.0.0.1:8080/api/predict
-- DIGITS_BODY=FILE and DIGITS_TYPE=content/type send another body, e.g. bench/pixels.json with
-- DIGITS_TYPE=application/json.
local file = assert(io.open(os.getenv("DIGITS_BODY") or "bench/drawn-7-56px.png", "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("DIGITS_TYPE") or "image/png"

function done(summary, latency, requests)
  io.write(string.format("non-2xx responses: %d, socket errors: %d\n", summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
