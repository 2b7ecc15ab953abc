{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "hda-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name when it already contains the chart name.
*/}}
{{- define "hda-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart label value: <name>-<version>, "+" replaced (not allowed in label values).
*/}}
{{- define "hda-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of the release (Deployment selectors are immutable).
*/}}
{{- define "hda-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hda-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Standard labels (Helm chart best practices) on every object the chart renders.
*/}}
{{- define "hda-operator.labels" -}}
helm.sh/chart: {{ include "hda-operator.chart" . }}
{{ include "hda-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hyperdrive-accelerator
{{- end }}

{{/*
Labels for cluster-wide objects shared by the whole installation (the CRD): no component.
*/}}
{{- define "hda-operator.crdLabels" -}}
helm.sh/chart: {{ include "hda-operator.chart" . }}
app.kubernetes.io/name: {{ include "hda-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hyperdrive-accelerator
{{- end }}

{{/*
ServiceAccount name (Helm RBAC best practice): the full name when created, else the given
name, else "default".
*/}}
{{- define "hda-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hda-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "hda-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}
