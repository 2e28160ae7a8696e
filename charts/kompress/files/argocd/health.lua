-- Argo CD health check for kompress.dev/CompressionJob.
-- Install as resource.customizations.health.kompress.dev_CompressionJob in argocd-cm (docs/gitops.md).
-- Reads the operator's conditions (the source of truth), not the derived phase:
--   not yet observed (generation ahead of status) -> Progressing
--   Failed=True     -> Degraded, with the operator's reason and message
--   Succeeded=True  -> Healthy, with the output URI
--   Suspended=True  -> Suspended
--   anything else   -> Progressing, with phase, stage and percent
-- Argo CD runs gopher-lua (Lua 5.1): no goto, no integer division, no string.format('%d') on floats.
local hs = { status = "Progressing", message = "Waiting for the Kompress operator" }

local function condition(status, ctype)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation

if status == nil then
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local failed = condition(status, "Failed")
if is_true(failed) then
  hs.status = "Degraded"
  hs.message = (failed.reason or "Failed") .. ": " .. (failed.message or "")
  return hs
end

local succeeded = condition(status, "Succeeded")
if is_true(succeeded) then
  hs.status = "Healthy"
  local uri = status.result and status.result.outputUri
  hs.message = succeeded.message or ("Published to " .. tostring(uri))
  return hs
end

local suspended = condition(status, "Suspended")
if is_true(suspended) then
  hs.status = "Suspended"
  hs.message = suspended.message or "Suspended by spec.suspend"
  return hs
end

local parts = {}
if status.phase ~= nil then
  table.insert(parts, status.phase)
end
local progress = status.progress
if progress ~= nil then
  if progress.stage ~= nil then
    table.insert(parts, "stage " .. progress.stage)
  end
  if progress.percent ~= nil then
    table.insert(parts, tostring(progress.percent) .. "%")
  end
  if progress.message ~= nil then
    table.insert(parts, progress.message)
  end
end
local queued = condition(status, "Queued")
if is_true(queued) and queued.message ~= nil and queued.message ~= "" then
  table.insert(parts, queued.message)
end
if #parts > 0 then
  hs.message = table.concat(parts, ": ")
end
return hs
