{{/* The release's full name, cut to 63 characters. */}}
{{- define "tessera.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tessera.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tessera.labels" -}}
{{ include "tessera.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tessera
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tessera.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tessera.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespaces of declared plugins, each once. */}}
{{- define "tessera.pluginNamespaces" -}}
{{- $seen := dict -}}
{{- range .Values.plugins -}}
{{- $_ := set $seen .namespace true -}}
{{- end -}}
{{- keys $seen | sortAlpha | join "," -}}
{{- end -}}

{{/* Namespaces where the leader keeps token Secrets: plugins without a serviceAccount. */}}
{{- define "tessera.tokenSecretNamespaces" -}}
{{- $seen := dict -}}
{{- range .Values.plugins -}}
{{- if not .serviceAccount -}}
{{- $_ := set $seen .namespace true -}}
{{- end -}}
{{- end -}}
{{- keys $seen | sortAlpha | join "," -}}
{{- end -}}

{{/* "true" when a declared plugin registers with its ServiceAccount token. */}}
{{- define "tessera.reviewsTokens" -}}
{{- range .Values.plugins -}}
{{- if .serviceAccount -}}true{{- end -}}
{{- end -}}
{{- end -}}
