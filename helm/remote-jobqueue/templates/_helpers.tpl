{{- /*
  Names, labels, images and the secrets that are generated once and kept.

  Labels follow zero-to-jupyterhub: the `component` label (hub, proxy, gateway, ...) and the
  app.kubernetes.io/* set (name, instance, component, plus helm.sh/chart and managed-by outside
  selectors). Helpers that need the component take (dict "root" $ "component" "hub").
*/}}

{{- define "remote-jobqueue.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* <release>-<chart>, or the release alone when it already holds the chart's name. */}}
{{- define "remote-jobqueue.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := include "remote-jobqueue.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- /* The name of one component's resources: (dict "root" $ "component" "hub"). */}}
{{- define "remote-jobqueue.componentName" -}}
{{- printf "%s-%s" (include "remote-jobqueue.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "remote-jobqueue.hub.serviceAccountName" -}}
{{- if .Values.hub.serviceAccount.create }}
{{- .Values.hub.serviceAccount.name | default (include "remote-jobqueue.componentName" (dict "root" . "component" "hub")) }}
{{- else }}
{{- .Values.hub.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{- /* Selector labels of a component: stable for the life of the release. */}}
{{- define "remote-jobqueue.selectorLabels" -}}
component: {{ .component }}
app.kubernetes.io/name: {{ include "remote-jobqueue.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "remote-jobqueue.labels" -}}
{{ include "remote-jobqueue.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: remote-jobqueue
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* name:tag of an image value ({name, tag}); the tag defaults to the chart's appVersion. */}}
{{- define "remote-jobqueue.image" -}}
{{- printf "%s:%s" .image.name (.image.tag | default .root.Chart.AppVersion) }}
{{- end }}

{{- /*
  Environment variables from a map ({NAME: "value"} or {NAME: {valueFrom: ...}}), as
  zero-to-jupyterhub's extraEnv.
*/}}
{{- define "remote-jobqueue.extraEnv" -}}
{{- range $name, $value := . }}
{{- if kindIs "map" $value }}
- {{ merge (dict "name" $name) $value | toYaml | indent 2 | trim }}
{{- else }}
- name: {{ $name | quote }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- /* Addresses inside the cluster. */}}
{{- define "remote-jobqueue.hub.url" -}}
{{- printf "http://%s:%d" (include "remote-jobqueue.componentName" (dict "root" . "component" "hub")) (int .Values.hub.service.port) }}
{{- end }}

{{- define "remote-jobqueue.gateway.internalAddress" -}}
{{- printf "%s.%s.svc:%d" (include "remote-jobqueue.componentName" (dict "root" . "component" "gateway")) .Release.Namespace (int .Values.gateway.service.port) }}
{{- end }}

{{- /* Where files are mounted. */}}
{{- define "remote-jobqueue.hostKeySecretDir" -}}/etc/remote-jobqueue/gateway-host-key{{- end }}
{{- define "remote-jobqueue.hostKeyDir" -}}/run/remote-jobqueue-gateway{{- end }}
{{- define "remote-jobqueue.hostKeyFile" -}}ssh_host_ed25519_key{{- end }}
{{- define "remote-jobqueue.hubTokenDir" -}}/etc/remote-jobqueue/gateway-hub-token{{- end }}
{{- define "remote-jobqueue.condorCaDir" -}}/etc/remote-jobqueue/condor{{- end }}

{{- /*
  The site catalogue as a Dask config file: `remote-jobqueue.sites` from .Values.sites, each
  site's gateway and gateway-host-key defaulting to the chart's gateway, then daskConfig.
*/}}
{{- define "remote-jobqueue.daskConfig" -}}
{{- $sites := dict }}
{{- range $name, $site := .Values.sites }}
{{- $entry := deepCopy ($site | default dict) }}
{{- if and $.Values.gateway.externalAddress (not (get $entry "gateway")) }}
{{- $_ := set $entry "gateway" $.Values.gateway.externalAddress }}
{{- end }}
{{- if and $.Values.gateway.hostKey.publicKey (not (get $entry "gateway-host-key")) }}
{{- $_ := set $entry "gateway-host-key" (trim $.Values.gateway.hostKey.publicKey) }}
{{- end }}
{{- $_ := set $sites $name $entry }}
{{- end }}
{{- $section := merge (dict "sites" $sites) (deepCopy .Values.daskConfig) }}
{{- dict "remote-jobqueue" $section | toYaml }}
{{- end }}

{{- /*
  Secrets: the value given in the chart's values, else the one the release's Secret already
  holds (kept on upgrade), else a new one. zero-to-jupyterhub's pattern (_helpers-passwords.tpl):
  `lookup` returns nothing when there is no cluster (helm template), so a fresh one is made.

  (dict "root" $ "secret" <Secret name> "key" <data key> "given" <value> "kind" hex|alnum|ed25519)
*/}}
{{- define "remote-jobqueue.randHex" -}}
{{- $result := "" }}
{{- range $i := until . }}
{{- $result = print $result (mod (randNumeric 4 | atoi) 16 | printf "%x") }}
{{- end }}
{{- $result }}
{{- end }}

{{- define "remote-jobqueue.keptSecret" -}}
{{- if .given }}
{{- .given }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret | default dict }}
{{- $data := get $existing "data" | default dict }}
{{- if hasKey $data .key }}
{{- index $data .key | b64dec }}
{{- else if eq .kind "hex" }}
{{- include "remote-jobqueue.randHex" 64 }}
{{- else if eq .kind "ed25519" }}
{{- genPrivateKey "ed25519" }}
{{- else }}
{{- randAlphaNum 64 }}
{{- end }}
{{- end }}
{{- end }}

{{- define "remote-jobqueue.hub.secretName" -}}
{{- include "remote-jobqueue.componentName" (dict "root" . "component" "hub") }}
{{- end }}

{{- define "remote-jobqueue.gateway.secretName" -}}
{{- include "remote-jobqueue.componentName" (dict "root" . "component" "gateway") }}
{{- end }}

{{- define "remote-jobqueue.gateway.hostKeySecretName" -}}
{{- .Values.gateway.hostKey.existingSecret | default (include "remote-jobqueue.componentName" (dict "root" . "component" "gateway-host-key")) }}
{{- end }}

{{- define "remote-jobqueue.proxyToken" -}}
{{- include "remote-jobqueue.keptSecret" (dict "root" . "secret" (include "remote-jobqueue.hub.secretName" .) "key" "proxy-auth-token" "given" .Values.proxy.secretToken "kind" "alnum") }}
{{- end }}

{{- /* The client secret's secretKeyRef; empty for a public client (PKCE only). */}}
{{- define "remote-jobqueue.oidcSecretRef" -}}
{{- if .Values.oidc.clientSecret }}
name: {{ include "remote-jobqueue.hub.secretName" . }}
key: oidc-client-secret
{{- else if .Values.oidc.existingSecret.name }}
name: {{ .Values.oidc.existingSecret.name }}
key: {{ .Values.oidc.existingSecret.key }}
{{- end }}
{{- end }}
