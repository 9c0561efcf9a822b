{{/*
Chart name, truncated to the 63 characters of a label value.
*/}}
{{- define "kms-cluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every resource. 52 characters at most: the StatefulSet controller
adds `-<10-character hash>` to it in the controller-revision-hash label (63 at most),
and `<fullname>-headless` must stay a valid 63-character Service name.
*/}}
{{- define "kms-cluster.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "kms-cluster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "kms-cluster.labels" -}}
helm.sh/chart: {{ include "kms-cluster.chart" . }}
{{ include "kms-cluster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kms-cluster
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: the pods of this release (immutable in the StatefulSet selector).
*/}}
{{- define "kms-cluster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kms-cluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the headless Service (the StatefulSet's serviceName, the peers' DNS subdomain).
*/}}
{{- define "kms-cluster.headlessName" -}}
{{- printf "%s-headless" (include "kms-cluster.fullname" .) }}
{{- end }}

{{/*
DNS suffix shared by the pods: `<fullname>-headless.<namespace>.svc.<clusterDomain>`.
*/}}
{{- define "kms-cluster.peerDomain" -}}
{{- printf "%s.%s.svc.%s" (include "kms-cluster.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
Static peer list for --peers: node id = ordinal + 1 (what --node-id-from-hostname derives
from the pod name), address = the pod's stable DNS name on the cluster port.
*/}}
{{- define "kms-cluster.peers" -}}
{{- $fullname := include "kms-cluster.fullname" . }}
{{- $domain := include "kms-cluster.peerDomain" . }}
{{- $peers := list }}
{{- range $i := until (int .Values.replicas) }}
{{- $peers = append $peers (printf "%d=%s-%d.%s:9689" (add1 $i) $fullname $i $domain) }}
{{- end }}
{{- join "," $peers }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "kms-cluster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kms-cluster.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "kms-cluster.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Secret holding ca.crt, tls.crt and tls.key.
*/}}
{{- define "kms-cluster.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "kms-cluster.fullname" .)) }}
{{- end }}

{{/*
Secret holding the admin token, and the key inside it.
*/}}
{{- define "kms-cluster.adminTokenSecretName" -}}
{{- .Values.adminToken.existingSecret | default (printf "%s-admin-token" (include "kms-cluster.fullname" .)) }}
{{- end }}
{{- define "kms-cluster.adminTokenSecretKey" -}}
{{- if .Values.adminToken.existingSecret }}{{ .Values.adminToken.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/*
Address for a listener: bindAddress plus port.
*/}}
{{- define "kms-cluster.bind" -}}
{{- printf "%s:%d" .root.Values.bindAddress (int .port) }}
{{- end }}

{{/*
One TOML value: strings as JSON strings (valid TOML basic strings), booleans as is,
whole numbers as integers (Helm reads YAML numbers as floats, and kmsd's integer keys
reject `120.0`), other numbers as floats.
*/}}
{{- define "kms-cluster.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ ternary "true" "false" . }}
{{- else if or (kindIs "int64" .) (kindIs "int" .) }}{{ int64 . }}
{{- else if kindIs "float64" . }}{{ if eq . (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}{{ fail (printf "config: unsupported value %v (%s)" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/*
Checks that cannot be expressed in values.schema.json.
*/}}
{{- define "kms-cluster.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not (and .Values.tls.ca .Values.tls.cert .Values.tls.key)) }}
{{- fail "tls.enabled: set tls.existingSecret, or all of tls.ca, tls.cert and tls.key" }}
{{- end }}
{{- if and .Values.adminToken.enabled (not .Values.adminToken.existingSecret) (not .Values.adminToken.value) }}
{{- fail "adminToken.enabled: set adminToken.existingSecret, or adminToken.value" }}
{{- end }}
{{- with .Values.config }}
{{- if and (hasKey . "heartbeat_ms") (hasKey . "election_timeout_ms") }}
{{- if le (int64 .election_timeout_ms) (int64 .heartbeat_ms) }}
{{- fail "config.election_timeout_ms must be larger than config.heartbeat_ms" }}
{{- end }}
{{- end }}
{{- $stall := ternary 10 (int64 (.watchdog_stall_secs | default 0)) (kindIs "invalid" .watchdog_stall_secs) }}
{{- $abort := int64 (.watchdog_abort_secs | default 0) }}
{{- if and (gt $abort 0) (or (eq $stall 0) (lt $abort $stall)) }}
{{- fail "config.watchdog_abort_secs must be 0 (never abort) or at least config.watchdog_stall_secs (and that not 0)" }}
{{- end }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) }}
{{- if and (not (kindIs "string" .Values.podDisruptionBudget.minAvailable)) (gt (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicas)) }}
{{- fail "podDisruptionBudget.minAvailable is larger than replicas: no node could ever be drained" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
An IntOrString value: percentages quoted, numbers as integers.
*/}}
{{- define "kms-cluster.intOrString" -}}
{{- if kindIs "string" . }}{{ quote . }}{{ else }}{{ int64 . }}{{ end }}
{{- end }}
