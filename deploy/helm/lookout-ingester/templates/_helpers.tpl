{{- define "lookout_ingester.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lookout_ingester.config.name" -}}
{{- printf "%s-config" (include "lookout_ingester.name" .) -}}
{{- end -}}

{{- define "lookout_ingester.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lookout_ingester.labels.identity" -}}
app: {{ include "lookout_ingester.name" . }}
{{- end -}}

{{- define "lookout_ingester.labels.all" -}}
{{ include "lookout_ingester.labels.identity" . }}
chart: {{ include "lookout_ingester.chart" . }}
release: {{ .Release.Name }}
{{- if .Values.additionalLabels }}
{{ toYaml .Values.additionalLabels }}
{{- end }}
{{- end -}}

{{- define "lookout_ingester.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Where the Postgres password Secret is mounted, and the file the config points at. */}}
{{- define "lookout_ingester.passwordDir" -}}/secrets/postgres{{- end -}}
{{- define "lookout_ingester.passwordFile" -}}
{{- printf "%s/%s" (include "lookout_ingester.passwordDir" .) .Values.postgresPassword.secretKey -}}
{{- end -}}

{{/* The metrics/probe port: applicationConfig's metricsPort (either spelling), else the ingester's default. */}}
{{- define "lookout_ingester.metricsPort" -}}
{{- $c := .Values.applicationConfig | default dict -}}
{{- coalesce (get $c "metricsPort") (get $c "metrics_port") 9002 -}}
{{- end -}}

{{/*
The ingester's configuration file: applicationConfig, minus the keys that only name Secrets for this chart, plus
what the chart manages (shutdownTimeout, and postgres.passwordFile when the password comes from a Secret).
*/}}
{{- define "lookout_ingester.applicationConfig" -}}
{{- $c := deepCopy (.Values.applicationConfig | default dict) -}}
{{- if or (hasKey $c "shutdownTimeout") (hasKey $c "shutdown_timeout") -}}
{{- fail "set shutdownTimeoutSeconds instead of applicationConfig.shutdownTimeout (the chart checks it against terminationGracePeriodSeconds)" -}}
{{- end -}}
{{- if lt (int .Values.terminationGracePeriodSeconds) (add (int .Values.shutdownTimeoutSeconds) 5 | int) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least shutdownTimeoutSeconds (%v) + 5, or Kubernetes kills the ingester while it stores its last batch" .Values.terminationGracePeriodSeconds .Values.shutdownTimeoutSeconds) -}}
{{- end -}}
{{- $_ := set $c "shutdownTimeout" (printf "%ds" (int .Values.shutdownTimeoutSeconds)) -}}
{{- if hasKey $c "pulsar" -}}
{{- $_ := set $c "pulsar" (omit $c.pulsar "authenticationSecret" "cacert") -}}
{{- end -}}
{{- if .Values.postgresPassword.secretName -}}
{{- $pg := get $c "postgres" | default dict -}}
{{- $_ := set $pg "passwordFile" (include "lookout_ingester.passwordFile" .) -}}
{{- $_ := set $c "postgres" $pg -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/* Volume mounts shared by the ingester and the migrate Job (after the config mount). */}}
{{- define "lookout_ingester.volumeMounts" -}}
- name: user-config
  mountPath: /config/application_config.yaml
  subPath: application_config.yaml
  readOnly: true
{{- if .Values.postgresPassword.secretName }}
- name: postgres-password
  mountPath: {{ include "lookout_ingester.passwordDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.applicationConfig.pulsar.authenticationEnabled }}
- name: pulsar-token
  mountPath: /pulsar/tokens
  readOnly: true
{{- end }}
{{- if .Values.applicationConfig.pulsar.tlsEnabled }}
- name: pulsar-ca
  mountPath: /pulsar/ca
  readOnly: true
{{- end }}
{{- with .Values.additionalVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes shared by the ingester and the migrate Job; `configMap` names the config's ConfigMap. */}}
{{- define "lookout_ingester.volumes" -}}
{{- $ := .root -}}
- name: user-config
  configMap:
    name: {{ .configMap }}
{{- if $.Values.postgresPassword.secretName }}
- name: postgres-password
  secret:
    secretName: {{ $.Values.postgresPassword.secretName | quote }}
    items:
      - key: {{ $.Values.postgresPassword.secretKey | quote }}
        path: {{ $.Values.postgresPassword.secretKey | quote }}
{{- end }}
{{- if $.Values.applicationConfig.pulsar.authenticationEnabled }}
- name: pulsar-token
  secret:
    secretName: {{ $.Values.applicationConfig.pulsar.authenticationSecret | default "armada-pulsar-token-armada-admin" | quote }}
    items:
      - key: TOKEN
        path: pulsar-token
{{- end }}
{{- if $.Values.applicationConfig.pulsar.tlsEnabled }}
- name: pulsar-ca
  secret:
    secretName: {{ $.Values.applicationConfig.pulsar.cacert | default "armada-pulsar-ca-tls" | quote }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- with $.Values.additionalVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "lookout_ingester.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
