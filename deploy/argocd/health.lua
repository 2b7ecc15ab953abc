-- Argo CD health check for hda.shitops.dev/HyperDriveAccelerator.
--
-- Install: argocd-cm key `resource.customizations.health.hda.shitops.dev_HyperDriveAccelerator`
-- (docs/gitops.md). Argo CD runs this in gopher-lua (Lua 5.1) with the base, table and a safe
-- os library only, so it uses no string.* functions and no Lua 5.2+ syntax. `obj` is the live
-- object decoded from JSON; every level is checked for nil.
--
-- First match wins:
--   1. metadata.deletionTimestamp set              -> Progressing "Pending deletion"
--   2. spec.paused == true                         -> Suspended   "Accelerator is paused"
--   3. no status                                   -> Progressing "Waiting for operator to report status"
--   4. status.observedGeneration < generation      -> Progressing "Operator has not yet observed the latest spec"
--   5. condition Degraded=True                     -> Degraded    its message, reason, or "Degraded"
--   6. condition Ready=True                        -> Healthy     its message or "Ready"
--   7. otherwise                                   -> Progressing the Ready message, or "Reconciling"
--
-- The operator says Degraded=True for every failure (an invalid spec, a failed apply, a child
-- name taken by someone else, a rollout past its deadline, pods that cannot pull their image,
-- crash-loop or cannot be scheduled, missing storage), so no condition reason is matched here.

local function nonEmpty(value)
  return value ~= nil and value ~= ""
end

local function firstNonEmpty(a, b, c)
  if nonEmpty(a) then return a end
  if nonEmpty(b) then return b end
  return c
end

local function findCondition(conditions, conditionType)
  if type(conditions) ~= "table" then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if type(condition) == "table" and condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function check(o)
  local metadata = o.metadata
  if type(metadata) ~= "table" then
    metadata = {}
  end
  local spec = o.spec
  if type(spec) ~= "table" then
    spec = {}
  end

  if nonEmpty(metadata.deletionTimestamp) then
    return {status = "Progressing", message = "Pending deletion"}
  end

  if spec.paused == true then
    return {status = "Suspended", message = "Accelerator is paused"}
  end

  local status = o.status
  if type(status) ~= "table" then
    return {status = "Progressing", message = "Waiting for operator to report status"}
  end

  local generation = metadata.generation
  local observed = status.observedGeneration
  if type(generation) == "number" and (type(observed) ~= "number" or observed < generation) then
    return {status = "Progressing", message = "Operator has not yet observed the latest spec"}
  end

  local degraded = findCondition(status.conditions, "Degraded")
  if degraded ~= nil and degraded.status == "True" then
    return {status = "Degraded", message = firstNonEmpty(degraded.message, degraded.reason, "Degraded")}
  end

  local ready = findCondition(status.conditions, "Ready")
  if ready ~= nil and ready.status == "True" then
    return {status = "Healthy", message = firstNonEmpty(ready.message, nil, "Ready")}
  end
  if ready ~= nil then
    return {status = "Progressing", message = firstNonEmpty(ready.message, nil, "Reconciling")}
  end
  return {status = "Progressing", message = "Reconciling"}
end

return check(obj)
