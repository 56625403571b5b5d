-- wrk script: origin-decided group segments (bench/decided_bench.py).
--
-- wrk -s bench/decided.lua http://host:port -- <track> <group> <segments> <sessions>
--
-- Each wrk thread plays <sessions> sessions of its own (sid "t<thread>-s<n>"),
-- round robin: request k of a thread is session k mod <sessions> asking for its
-- next segment number (1 .. <segments>, then around again), with the CMCD a
-- player sends in query mode (CTA-5004: keys in alphabetical order, strings
-- quoted, the whole payload percent-encoded) and the sid argument the group
-- playlist puts on every segment URI.  bl and mtp move from request to request,
-- so the controller sees a changing link.  wrk's Lua API does not say which
-- connection a request goes out on, so sessions are per thread, not per
-- connection: with -c64 -t2 and 32 sessions a thread, each session has about
-- one request in flight.

local counter = 0
local next_thread = 1

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  track = args[1] or "bench"
  group = args[2] or "aac"
  segments = tonumber(args[3] or "15")
  sessions = tonumber(args[4] or "32")
end

function request()
  local session = counter % sessions
  local number = math.floor(counter / sessions) % segments + 1
  counter = counter + 1
  local sid = string.format("t%d-s%d", thread_id, session)
  local bl = 4000 + (counter * 7919) % 26000
  local mtp = 300 + (counter * 104729) % 3000
  local cmcd = string.format(
    "bl%%3D%d%%2Cbr%%3D128%%2Ccid%%3D%%22%s%%22%%2Cd%%3D4000%%2Cmtp%%3D%d"
      .. "%%2Cot%%3Da%%2Csf%%3Dh%%2Csid%%3D%%22%s%%22%%2Cst%%3Dv%%2Cv%%3D1",
    bl, track, mtp, sid
  )
  local path = string.format(
    "/%s/group-%s/seg-%05d.m4s?sid=%s&CMCD=%s", track, group, number, sid, cmcd
  )
  return wrk.format("GET", path)
end
