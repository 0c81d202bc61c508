{{/*
tessera-plugin: the objects every plugin runs with. A plugin chart renders all of them with
  {{ include "tessera-plugin.all" . }}
and sets `.Values.plugin.name` (its version is the chart's appVersion, which must equal
plugin.yaml's version).
*/}}

{{- define "tessera-plugin.name" -}}
{{- required "plugin.name is required" .Values.plugin.name -}}
{{- end -}}

{{- define "tessera-plugin.fullname" -}}
{{- include "tessera-plugin.name" . | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tessera-plugin.version" -}}
{{- .Chart.AppVersion -}}
{{- end -}}

{{- define "tessera-plugin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera-plugin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tessera-plugin.labels" -}}
{{ include "tessera-plugin.selectorLabels" . }}
app.kubernetes.io/version: {{ include "tessera-plugin.version" . | quote }}
app.kubernetes.io/part-of: tessera-plugins
app.kubernetes.io/component: plugin
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
plugin.name: {{ include "tessera-plugin.name" . }}
plugin.version: {{ include "tessera-plugin.version" . | quote }}
{{- end -}}

{{/* The Secret the core reads the plugin's secrets from (docs/secrets.md). */}}
{{- define "tessera-plugin.secretsName" -}}
{{- printf "tessera-secrets-%s" (include "tessera-plugin.name" .) -}}
{{- end -}}

{{/* "secret", "externalSecret" or "": which object holds the plugin's secrets, if the chart makes one. */}}
{{- define "tessera-plugin.secretsKind" -}}
{{- $s := .Values.secrets | default dict -}}
{{- $external := ($s.externalSecret | default dict).enabled -}}
{{- if and $s.values $external -}}
{{- fail "secrets: set secrets.values or secrets.externalSecret, not both (both would own Secret tessera-secrets-<name>)" -}}
{{- else if $external -}}
externalSecret
{{- else if $s.values -}}
secret
{{- end -}}
{{- end -}}

{{- define "tessera-plugin.tokenSecret" -}}
{{- default (printf "plugin-reg-token-%s" (include "tessera-plugin.name" .)) .Values.registrationToken.secretName -}}
{{- end -}}

{{/* Every object, in order. */}}
{{- define "tessera-plugin.all" -}}
{{ include "tessera-plugin.serviceaccount" . }}
---
{{- if not .Values.registrationToken.serviceAccountToken }}
{{ include "tessera-plugin.role" . }}
---
{{- end }}
{{- if include "tessera-plugin.secretsKind" . }}
{{ include "tessera-plugin.secrets" . }}
---
{{- end }}
{{ include "tessera-plugin.configmap" . }}
---
{{ include "tessera-plugin.service" . }}
---
{{ include "tessera-plugin.deployment" . }}
---
{{ include "tessera-plugin.networkpolicy" . }}
{{- if .Values.autoscaling.enabled }}
---
{{ include "tessera-plugin.hpa" . }}
{{- end }}
{{- end -}}

{{/* The core's host name, from core.url. */}}
{{- define "tessera-plugin.coreHost" -}}
{{- regexReplaceAll "[:/].*$" (regexReplaceAll "^[a-z]+://" .Values.core.url "") "" -}}
{{- end -}}

{{/* The core's egress proxy: its host, port core.egressPort. */}}
{{- define "tessera-plugin.egressUrl" -}}
http://{{ include "tessera-plugin.coreHost" . }}:{{ .Values.core.egressPort | default 8081 }}
{{- end -}}
