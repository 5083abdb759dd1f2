-- wrk script: POST one CDS Hooks request file (path in the REQUEST_FILE environment variable).
local file = assert(io.open(os.getenv("REQUEST_FILE"), "r"))
wrk.method = "POST"
wrk.body = file:read("*a")
wrk.headers["Content-Type"] = "application/json"
file:close()
