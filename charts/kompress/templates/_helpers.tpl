{{/* Names and labels shared by every template. */}}
{{- define "kompress.name" -}}kompress{{- end -}}

{{- define "kompress.fullname" -}}
{{- if contains "kompress" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-kompress" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kompress.labels" -}}
app.kubernetes.io/name: kompress
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kompress.operatorSelector" -}}
app.kubernetes.io/name: kompress
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kompress.operatorServiceAccount" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "kompress.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "kompress.operatorImage" -}}
{{ .Values.operator.image.repository }}:{{ default .Chart.AppVersion .Values.operator.image.tag }}
{{- end -}}

{{/* Namespaces that hold worker pods: the watched ones, or the release namespace when all are watched. */}}
{{- define "kompress.workerNamespaces" -}}
{{- if .Values.watchNamespaces -}}{{ join "," .Values.watchNamespaces }}{{- else -}}{{ .Release.Namespace }}{{- end -}}
{{- end -}}
