{{- define "tessera-plugin.serviceaccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "tessera-plugin.fullname" . }}
  labels:
    {{- include "tessera-plugin.labels" . | nindent 4 }}
automountServiceAccountToken: false
{{- end -}}

{{- define "tessera-plugin.role" -}}
# Least privilege: the plugin may read its own registration-token Secret, nothing else.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ include "tessera-plugin.fullname" . }}
  labels:
    {{- include "tessera-plugin.labels" . | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: [secrets]
    resourceNames: [{{ include "tessera-plugin.tokenSecret" . }}]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ include "tessera-plugin.fullname" . }}
  labels:
    {{- include "tessera-plugin.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ include "tessera-plugin.fullname" . }}
subjects:
  - kind: ServiceAccount
    name: {{ include "tessera-plugin.fullname" . }}
    namespace: {{ .Release.Namespace }}
{{- end -}}

{{- define "tessera-plugin.secrets" -}}
{{- $s := .Values.secrets -}}
{{- if eq (include "tessera-plugin.secretsKind" .) "externalSecret" -}}
{{- $e := $s.externalSecret -}}
{{- if not $e.data -}}
{{- fail "secrets.externalSecret.data: list at least one {secretKey, remoteRef} (the secret names plugin.yaml lists)" -}}
{{- end -}}
{{- range $e.data -}}
{{- if not (regexMatch "^[A-Za-z_][A-Za-z0-9_]*$" (toString .secretKey)) -}}
{{- fail (printf "secrets.externalSecret.data: secretKey %q is not a secret name (a letter or _, then letters, digits or _)" (toString .secretKey)) -}}
{{- end -}}
{{- end -}}
# The plugin's secrets (docs/secrets.md), kept by External Secrets in Secret
# tessera-secrets-<name>, which the core reads; the plugin's pods never mount it.
apiVersion: {{ $e.apiVersion | default "external-secrets.io/v1" }}
kind: ExternalSecret
metadata:
  name: {{ include "tessera-plugin.secretsName" . }}
  labels:
    {{- include "tessera-plugin.labels" . | nindent 4 }}
spec:
  refreshInterval: {{ $e.refreshInterval | default "1h" | quote }}
  secretStoreRef:
    name: {{ required "secrets.externalSecret.secretStoreRef.name is required" ($e.secretStoreRef | default dict).name }}
    kind: {{ ($e.secretStoreRef | default dict).kind | default "SecretStore" }}
  target:
    name: {{ include "tessera-plugin.secretsName" . }}
    creationPolicy: Owner
  data:
    {{- toYaml $e.data | nindent 4 }}
{{- else -}}
{{- range $k, $v := $s.values -}}
{{- if not (regexMatch "^[A-Za-z_][A-Za-z0-9_]*$" $k) -}}
{{- fail (printf "secrets.values: %q is not a secret name (a letter or _, then letters, digits or _)" $k) -}}
{{- end -}}
{{- end -}}
# The plugin's secrets (docs/secrets.md), from the chart's values: for development only (the
# values sit in the values file and in Helm's release record). The core reads this Secret; the
# plugin's pods never mount it.
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "tessera-plugin.secretsName" . }}
  labels:
    {{- include "tessera-plugin.labels" . | nindent 4 }}
type: Opaque
stringData:
  {{- range $k, $v := $s.values }}
  {{ $k }}: {{ toString $v | quote }}
  {{- end }}
{{- end -}}
{{- end -}}

{{- define "tessera-plugin.configmap" -}}
# The plugin's configuration (PLUGIN_CONFIG_FILE), checked against its configSchema at start.
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "tessera-plugin.fullname" . }}-config
  labels:
    {{- include "tessera-plugin.labels" . | nindent 4 }}
data:
  config.json: {{ .Values.config | toJson | quote }}
{{- end -}}

{{- define "tessera-plugin.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "tessera-plugin.fullname" . }}
  labels:
    {{- include "tessera-plugin.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "tessera-plugin.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .Values.service.port }}
      targetPort: http
      protocol: TCP
{{- end -}}

{{- define "tessera-plugin.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "tessera-plugin.fullname" . }}
  labels:
    {{- include "tessera-plugin.labels" . | nindent 4 }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "tessera-plugin.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "tessera-plugin.labels" . | nindent 8 }}
      annotations:
        checksum/config: {{ .Values.config | toJson | sha256sum }}
    spec:
      serviceAccountName: {{ include "tessera-plugin.fullname" . }}
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: plugin
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default (include "tessera-plugin.version" .) }}"
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          env:
            - name: PORT
              value: "8080"
            - name: LISTEN_HOST
              value: "0.0.0.0"
            - name: CORE_BASE_URL
              value: {{ .Values.core.url | quote }}
            # Calls out go through the core's egress proxy (capability http:outbound; the
            # manifest's egressAllow is enforced there); calls to the core and in-cluster
            # services do not.
            - name: TESSERA_EGRESS_URL
              value: {{ include "tessera-plugin.egressUrl" . | quote }}
            - name: HTTPS_PROXY
              value: {{ include "tessera-plugin.egressUrl" . | quote }}
            - name: HTTP_PROXY
              value: {{ include "tessera-plugin.egressUrl" . | quote }}
            - name: NO_PROXY
              value: "{{ include "tessera-plugin.coreHost" . }},.svc,.cluster.local,localhost,127.0.0.1"
            - name: SERVICE_URL
              value: "http://{{ include "tessera-plugin.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.service.port }}"
            {{- if .Values.registrationToken.serviceAccountToken }}
            # The pod's projected ServiceAccount token (audience tessera), rotated by the kubelet
            # and read again before every registration.
            - name: REG_TOKEN_FILE
              value: /var/run/secrets/tessera/token
            {{- else }}
            - name: REG_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ include "tessera-plugin.tokenSecret" . }}
                  key: {{ .Values.registrationToken.key }}
            {{- end }}
            - name: PLUGIN_CONFIG_FILE
              value: /etc/plugin/config.json
            {{- with .Values.uiRemotePath }}
            - name: UI_REMOTE_PATH
              value: {{ . | quote }}
            {{- end }}
          ports:
            - name: http
              containerPort: 8080
              protocol: TCP
          livenessProbe:
            httpGet:
              path: {{ .Values.health.livenessPath }}
              port: http
            periodSeconds: 10
            timeoutSeconds: 2
          readinessProbe:
            httpGet:
              path: {{ .Values.health.readinessPath }}
              port: http
            periodSeconds: 5
            timeoutSeconds: 2
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            privileged: false
            capabilities:
              drop: [ALL]
            seccompProfile:
              type: RuntimeDefault
          volumeMounts:
            - name: config
              mountPath: /etc/plugin
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- if .Values.registrationToken.serviceAccountToken }}
            - name: tessera-token
              mountPath: /var/run/secrets/tessera
              readOnly: true
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "tessera-plugin.fullname" . }}-config
        - name: tmp
          emptyDir: {}
        {{- if .Values.registrationToken.serviceAccountToken }}
        - name: tessera-token
          projected:
            sources:
              - serviceAccountToken:
                  audience: tessera
                  expirationSeconds: 3600
                  path: token
        {{- end }}
{{- end -}}

{{- define "tessera-plugin.networkpolicy" -}}
# Egress is denied except DNS and the core: calls out go through the core's egress proxy,
# which enforces the manifest's egressAllow (docs/egress.md).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "tessera-plugin.fullname" . }}
  labels:
    {{- include "tessera-plugin.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "tessera-plugin.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    # The core probes the plugin, proxies its calls and fetches its remote.
    - from:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ .Values.core.namespace }}
          podSelector:
            matchLabels:
              {{- toYaml .Values.core.podLabels | nindent 14 }}
      ports:
        - port: http
          protocol: TCP
  egress:
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    - to:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ .Values.core.namespace }}
          podSelector:
            matchLabels:
              {{- toYaml .Values.core.podLabels | nindent 14 }}
{{- end -}}

{{- define "tessera-plugin.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "tessera-plugin.fullname" . }}
  labels:
    {{- include "tessera-plugin.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "tessera-plugin.fullname" . }}
  minReplicas: {{ .Values.autoscaling.minReplicas }}
  maxReplicas: {{ .Values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .Values.autoscaling.targetCPUUtilizationPercentage }}
{{- end -}}
