-- spec/tls_certs.lua: test certificates for the TLS specs, made with the openssl CLI into a
-- temporary folder: a CA; a server certificate for localhost and 127.0.0.1; one for another
-- name whose CN is localhost (RFC 5922 §7.2: a CN does not count when there are SANs); one
-- with only a CN; client certificates (CN=alice, CN=kamailio.test); and a second CA,
-- untrusted, with a right-named server certificate.
local peer = require "peer"

local M = {}

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = q

local SCRIPT = [[
set -e
ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $1.key -out $1.csr -subj "$2"; }
ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $1.key -out $1.pem -days 2 -subj "$2"; }
sign() { # name ca ext-lines
  printf "$3" > $1.ext
  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -out $1.pem -days 2 -extfile $1.ext
}
ca ca "/CN=luasip test CA"
ca rogue "/CN=rogue CA"
ec server "/CN=localhost";    sign server ca "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
ec wrong "/CN=localhost";     sign wrong ca "subjectAltName=DNS:other.example\n"
ec cnonly "/CN=localhost";    sign cnonly ca "basicConstraints=CA:FALSE\n"
ec client "/CN=alice";        sign client ca "subjectAltName=DNS:alice.example,URI:sip:alice@example.com\n"
ec kamailio "/CN=kamailio.test"; sign kamailio ca "subjectAltName=DNS:kamailio.test\n"
ec untrusted "/CN=localhost"; sign untrusted rogue "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
echo done
]]

--- M.make() -> dir: a new temporary folder holding NAME.pem and NAME.key for each of ca,
-- rogue, server, wrong, cnonly, client, kamailio, untrusted. M.remove(dir) when done.
function M.make()
  local dir = peer.sh("mktemp -d"):match("^%s*(.-)%s*$")
  local out = peer.sh("{\ncd " .. q(dir) .. "\n" .. SCRIPT .. "} 2>&1")
  assert(out:find("done", 1, true), out)
  return dir
end

function M.remove(dir)
  os.execute("rm -rf " .. q(dir))
end

return M
