{{- /*
The operator's rights, and no more (tests/chart/test_rbac.py removes each rule in turn and shows a scenario
failing). It never reads Secrets: Secret values reach worker pods only through secretKeyRef/envFrom, which the
kubelet resolves. Planning pods and worker pods run under a ServiceAccount with no rights at all.
*/ -}}
{{- define "kompress.operatorRules" }}
# Watch CompressionJobs, and patch them: Kopf keeps its handler progress in annotations.
- apiGroups: ["kompress.dev"]
  resources: ["compressionjobs"]
  verbs: ["get", "list", "watch", "patch"]
# The operator is the only writer of status.
- apiGroups: ["kompress.dev"]
  resources: ["compressionjobs/status"]
  verbs: ["get", "patch"]
# The planning and worker Jobs: created, followed, suspended/resumed, deleted when a pending pod times out.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Pods are only read: scheduling failures, image pulls, exit codes, termination messages, pod IPs for progress.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Events on CompressionJobs for every transition.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
