{{- /*
The operator's rights, and no more (tests/operator/test_operator_rbac.py removes each rule in turn and shows a scenario
failing). It never reads Secrets: Secret values reach worker pods only through secretKeyRef/envFrom, which the
kubelet resolves. Planning pods and worker pods run under a ServiceAccount with no rights at all.
*/ -}}
{{- define "kompress.operatorRules" }}
# Follow CompressionJobs (watch events feed the operator's reconciles). No get: a conflicting status write
# waits for the newer version's watch event instead of re-reading. No patch: the operator keeps no state in
# them (no finalizer, no Kopf annotations), so deleting a job never waits for the operator.
- apiGroups: ["kompress.dev"]
  resources: ["compressionjobs"]
  verbs: ["list", "watch"]
# The operator is the only writer of status (merge patches on the /status subresource).
- apiGroups: ["kompress.dev"]
  resources: ["compressionjobs/status"]
  verbs: ["patch"]
# The planning and worker Jobs: created (get: find its own Job after a restart), followed, suspended/resumed
# (patch), deleted when a pod stays pending past spec.pendingTimeoutSeconds or a Kueue job is suspended.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Pods are only read: scheduling failures, image pulls, exit codes, termination messages, pod IPs for progress.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Events on CompressionJobs for every transition; listed (by the Job's uid and reason FailedCreate) only for
# a Job that has no pod: a pod the Job controller cannot create shows nowhere else.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
{{- end }}
