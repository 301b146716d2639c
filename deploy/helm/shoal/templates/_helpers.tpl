{{/* Names. Every object is <release>-shoal-<component>, or fullnameOverride-<component>. */}}
{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "shoal" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-shoal" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shoal.labels" -}}
app.kubernetes.io/name: shoal
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include "shoal.selector" (list . "origin") */}}
{{- define "shoal.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: shoal
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "shoal.image" -}}
{{- $ := index . 0 -}}
{{- printf "%s/%s:%s" $.Values.image.registry (index . 1) (default $.Chart.AppVersion $.Values.image.tag) -}}
{{- end -}}

{{- define "shoal.ns" -}}{{ .Release.Namespace }}{{- end -}}

{{/* In-cluster addresses. */}}
{{- define "shoal.originHeadless" -}}{{ include "shoal.fullname" . }}-origin-headless{{- end -}}
{{- define "shoal.originScheme" -}}{{ if .Values.tls.registry.secretName }}https{{ else }}http{{ end }}{{- end -}}
{{- define "shoal.originURL" -}}
{{- if .Values.agent.origin -}}
{{- .Values.agent.origin -}}
{{- else -}}
{{- printf "%s://%s-origin.%s.svc.%s:%d" (include "shoal.originScheme" .) (include "shoal.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.origin.port) -}}
{{- end -}}
{{- end -}}

{{/* The trackers' gRPC addresses as a YAML list (the same on origins and agents). */}}
{{- define "shoal.trackers" -}}
{{- $out := list -}}
{{- if .Values.trackers -}}
{{- $out = .Values.trackers -}}
{{- else if .Values.tracker.enabled -}}
{{- range $i := until (int .Values.tracker.count) -}}
{{- $out = append $out (printf "%s-tracker-%d.%s.svc.%s:%d" (include "shoal.fullname" $) $i $.Release.Namespace $.Values.clusterDomain (int $.Values.tracker.port)) -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* containerd registries: agent.containerd.registries, else origin.externalURL's host. */}}
{{- define "shoal.containerdRegistries" -}}
{{- $out := .Values.agent.containerd.registries -}}
{{- if and (not $out) .Values.origin.externalURL -}}
{{- $u := urlParse .Values.origin.externalURL -}}
{{- $out = list (dict "host" $u.host "server" (printf "%s://%s" $u.scheme $u.host)) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* A cert-manager csi-driver volume: include "shoal.csiVolume" (list . "agent" "${POD_NAME}" (list "extra.dns")) */}}
{{- define "shoal.csiVolume" -}}
{{- $ := index . 0 -}}
{{- $c := $.Values.tls.cluster -}}
{{- $dns := prepend (index . 3) $c.serverName -}}
- name: cluster-tls
  csi:
    driver: csi.cert-manager.io
    readOnly: true
    volumeAttributes:
      csi.cert-manager.io/issuer-name: {{ required "tls.cluster.issuer.name is required with tls.cluster.enabled" $c.issuer.name | quote }}
      csi.cert-manager.io/issuer-kind: {{ $c.issuer.kind | quote }}
      csi.cert-manager.io/issuer-group: {{ $c.issuer.group | quote }}
      csi.cert-manager.io/common-name: {{ index . 2 | quote }}
      csi.cert-manager.io/uri-sans: {{ printf "shoal://%s/%s" (index . 1) (index . 2) | quote }}
      csi.cert-manager.io/dns-names: {{ join "," $dns | quote }}
      csi.cert-manager.io/key-usages: "digital signature,server auth,client auth"
      csi.cert-manager.io/duration: {{ $c.duration | quote }}
{{- end -}}

{{/* prometheus.io annotations for a pod template. */}}
{{- define "shoal.scrapeAnnotations" -}}
{{- $ := index . 0 -}}
{{- if $.Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index . 1 | quote }}
prometheus.io/path: /metrics
prometheus.io/scheme: {{ index . 2 }}
{{- end -}}
{{- end -}}
