{{/*
Names. With the release called kid-operator the objects have the names
config/default gives them (kid-operator-controller-manager, ...).
*/}}
{{- define "kid-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name. 40 characters at most, so that the
longest suffix (-controller-manager, -receiver-metrics) still fits in a
63-character name.
*/}}
{{- define "kid-operator.fullname" -}}
{{- $name := "" }}
{{- if .Values.fullnameOverride }}
{{- $name = .Values.fullnameOverride }}
{{- else }}
{{- $base := default .Chart.Name .Values.nameOverride }}
{{- if contains $base .Release.Name }}
{{- $name = .Release.Name }}
{{- else }}
{{- $name = printf "%s-%s" .Release.Name $base }}
{{- end }}
{{- end }}
{{- if gt (len $name) 40 }}
{{- fail (printf "the name prefix %q is longer than 40 characters: choose a shorter release name or set fullnameOverride" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{- define "kid-operator.managerName" -}}
{{ include "kid-operator.fullname" . }}-controller-manager
{{- end }}

{{- define "kid-operator.receiverName" -}}
{{ include "kid-operator.fullname" . }}-receiver
{{- end }}

{{- define "kid-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "kid-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selects one tier's pods: include with (dict "root" $ "component" "manager"). */}}
{{- define "kid-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kid-operator.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kid-operator.image" -}}
{{- if .Values.image.digest }}
{{- .Values.image.repository }}@{{ .Values.image.digest }}
{{- else }}
{{- .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/*
The pod and container security contexts of both tiers: the restricted Pod
Security Standard, as config/manager has them. Not configurable.
*/}}
{{- define "kid-operator.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "kid-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* The flags both tiers share, after their own. */}}
{{- define "kid-operator.commonArgs" -}}
{{- with .Values.watchNamespaces }}
- --watch-namespaces={{ join "," . }}
{{- end }}
{{- if .Values.metrics.certSecretName }}
- --metrics-cert-dir=/etc/kid-operator/metrics-certs
{{- end }}
{{- end }}

{{/*
A tier's volumeMounts and volumes: the metrics certificate's, then the
tier's extraVolumeMounts and extraVolumes; items only, without the key.
Include with (dict "root" $ "tier" "manager").
*/}}
{{- define "kid-operator.volumeMounts" -}}
{{- with include "kid-operator.metricsCertVolumeMount" .root | trim }}
{{ . | trimPrefix "volumeMounts:" | trim }}
{{- end }}
{{- with (index .root.Values .tier).extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kid-operator.volumes" -}}
{{- with include "kid-operator.metricsCertVolume" .root | trim }}
{{ . | trimPrefix "volumes:" | trim }}
{{- end }}
{{- with (index .root.Values .tier).extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kid-operator.metricsCertVolumeMount" -}}
{{- if .Values.metrics.certSecretName }}
volumeMounts:
- name: metrics-certs
  mountPath: /etc/kid-operator/metrics-certs
  readOnly: true
{{- end }}
{{- end }}

{{- define "kid-operator.metricsCertVolume" -}}
{{- if .Values.metrics.certSecretName }}
volumes:
- name: metrics-certs
  secret:
    secretName: {{ .Values.metrics.certSecretName }}
{{- end }}
{{- end }}

{{/*
Checks of values that the schema cannot express, run by every template
that depends on them (Helm renders NOTES.txt last, so they go here).
*/}}
{{- define "kid-operator.validate" -}}
{{- $m := .Values.manager }}
{{- $r := .Values.receiver }}
{{- if and (gt (int $m.replicas) 1) (not $m.leaderElection.enabled) }}
{{- fail (printf "manager.replicas is %d but manager.leaderElection.enabled is false: two replicas without leader election would both run the controllers; enable leader election or set manager.replicas=1" (int $m.replicas)) }}
{{- end }}
{{- if le (int $r.terminationGracePeriodSeconds) (add (int $r.drainPeriodSeconds) 15) }}
{{- fail (printf "receiver.terminationGracePeriodSeconds (%d) must exceed receiver.drainPeriodSeconds (%d) plus the 15 s the receiver gives requests in flight" (int $r.terminationGracePeriodSeconds) (int $r.drainPeriodSeconds)) }}
{{- end }}
{{- if and $r.spool.persistence.enabled (ne (int $r.replicas) 1) }}
{{- fail (printf "receiver.spool.persistence.enabled needs receiver.replicas 1 (it is %d): the spool's ReadWriteOnce claim has one writer" (int $r.replicas)) }}
{{- end }}
{{- if .Values.podDisruptionBudget.enabled }}
{{- $min := int .Values.podDisruptionBudget.minAvailable }}
{{- range $tier, $replicas := dict "manager" (int $m.replicas) "receiver" (int $r.replicas) }}
{{- if le $replicas $min }}
{{- fail (printf "%s.replicas (%d) must exceed podDisruptionBudget.minAvailable (%d), or no node drain could ever evict its pods; add replicas or set podDisruptionBudget.enabled=false" $tier $replicas $min) }}
{{- end }}
{{- end }}
{{- end }}
{{- $sm := .Values.serviceMonitor }}
{{- if and $sm.enabled (not $sm.tls.insecureSkipVerify) (not .Values.metrics.certSecretName) (not $sm.tls.caSecretName) }}
{{- fail "serviceMonitor.enabled is true but Prometheus could not verify the metrics endpoints: their certificates are self-signed unless metrics.certSecretName is set. Set metrics.certSecretName (a cert-manager Certificate's Secret, with ca.crt) or serviceMonitor.tls.caSecretName, or accept an unverified connection with serviceMonitor.tls.insecureSkipVerify=true" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.enabled is true but ingress.host is empty: k-ID needs the host name it delivers to (https://<host>/webhooks/<namespace>/<product>)" }}
{{- end }}
{{- $seen := dict }}
{{- range .Values.products }}
{{- $ns := .namespace | default $.Release.Namespace }}
{{- if and $.Values.watchNamespaces (not (has $ns $.Values.watchNamespaces)) }}
{{- fail (printf "product %s is in namespace %s, which watchNamespaces (%s) leaves out: the operator would never see it" .name $ns (join "," $.Values.watchNamespaces)) }}
{{- end }}
{{- $key := printf "%s/%s" $ns .name }}
{{- if hasKey $seen $key }}
{{- fail (printf "product %s appears twice in products" $key) }}
{{- end }}
{{- $_ := set $seen $key true }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount a tier runs as: include with (dict "root" $ "tier"
"manager"). The chart's own (<fullname>-controller-manager, -receiver, or
serviceAccount.name) unless serviceAccount.create is false; then
serviceAccount.name, which must exist, is required.
*/}}
{{- define "kid-operator.serviceAccountName" -}}
{{- $sa := (index .root.Values .tier).serviceAccount }}
{{- if $sa.create }}
{{- $sa.name | default (include (printf "kid-operator.%sName" .tier) .root) }}
{{- else }}
{{- required (printf "%s.serviceAccount.create is false but %s.serviceAccount.name is empty: name the ServiceAccount the %s runs as" .tier .tier .tier) $sa.name }}
{{- end }}
{{- end }}

{{/*
A tier's pod scheduling: priorityClassName, topologySpreadConstraints (each
without a labelSelector given the tier's own pods), nodeSelector,
tolerations, affinity. Include with (dict "root" $ "tier" "manager").
*/}}
{{- define "kid-operator.podScheduling" -}}
{{- $v := index .root.Values .tier }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range . }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "kid-operator.selectorLabels" (dict "root" $.root "component" $.tier) | fromYaml)) }}
{{- end }}
- {{ toYaml $c | nindent 2 | trim }}
{{- end }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The pod labels a tier's values add (podLabels), after the chart's. */}}
{{- define "kid-operator.podLabels" -}}
{{- with (index .root.Values .tier).podLabels }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
Non-empty when the chart makes the ServiceMonitor's scraper identity: a
ServiceAccount bound to the metrics-reader role, with a token Secret the
ServiceMonitor's authorization names.
*/}}
{{- define "kid-operator.createScraper" -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.serviceMonitor.authorization.secretName) }}true{{ end }}
{{- end }}

{{- define "kid-operator.scraperName" -}}
{{ include "kid-operator.fullname" . }}-metrics-scraper
{{- end }}

{{/* The status subresources of a list of resources, as a JSON array. */}}
{{- define "kid-operator.statusOf" -}}
{{- $out := list }}
{{- range . }}
{{- $out = append $out (printf "%s/status" .) }}
{{- end }}
{{- toJson $out }}
{{- end }}
