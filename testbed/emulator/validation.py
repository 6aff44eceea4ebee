"""Server-side validation of incoming objects, following kube-apiserver's rules and wording.

``validate(rt, obj, old)`` returns the FieldErrors that would make the real server answer
422 Invalid.  It runs after defaulting, like the real server.  The NetworkPolicy rules are
a port of pkg/apis/networking/validation; the metadata, pod, service, namespace, event and
EndpointSlice rules cover the parts the agent and its tests exercise.  Kept separate from
the HTTP layer so the rules can be unit tested directly.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from testbed.emulator import fielderrors, names, resources

FE = fielderrors.FieldError
PROTOCOLS = ("SCTP", "TCP", "UDP")
POLICY_TYPES = ("Ingress", "Egress")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
ANNOTATIONS_MAX_BYTES = 256 * 1024
POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def _map(value: Any, path: str, errs: list[FE]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errs.append(fielderrors.invalid(path, value, "must be an object"))
        return {}
    return value


def _items(value: Any, path: str, errs: list[FE]) -> list[tuple[str, dict[str, Any]]]:
    """``(path[i], item)`` for each object in a list field, reporting type mismatches."""
    if value is None:
        return []
    if not isinstance(value, list):
        errs.append(fielderrors.invalid(path, value, "must be a list"))
        return []
    out: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            out.append((f"{path}[{i}]", item))
        else:
            errs.append(fielderrors.invalid(f"{path}[{i}]", item, "must be an object"))
    return out


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# --- metadata ---------------------------------------------------------------------------


def validate_labels(labels: Any, path: str) -> list[FE]:
    errs: list[FE] = []
    for key, value in _map(labels, path, errs).items():
        errs.extend(fielderrors.invalid(path, key, m) for m in names.is_qualified_name(key))
        if not isinstance(value, str):
            errs.append(fielderrors.invalid(path, value, "must be a string"))
            continue
        errs.extend(fielderrors.invalid(path, value, m) for m in names.is_valid_label_value(value))
    return errs


def validate_annotations(annotations: Any, path: str) -> list[FE]:
    errs: list[FE] = []
    total = 0
    for key, value in _map(annotations, path, errs).items():
        errs.extend(fielderrors.invalid(path, key, m) for m in names.is_qualified_name(key.lower()))
        total += len(key) + len(_str(value))
    if total > ANNOTATIONS_MAX_BYTES:
        errs.append(
            fielderrors.invalid(
                path, "", f"must have at most {ANNOTATIONS_MAX_BYTES} bytes (too long)"
            )
        )
    return errs


def _name_rule(rt: resources.ResourceType) -> Any:
    if rt is resources.NAMESPACES:
        return names.is_dns1123_label
    if rt is resources.SERVICES:
        return names.is_dns1035_label
    return names.is_dns1123_subdomain


def validate_meta(rt: resources.ResourceType, obj: dict[str, Any]) -> list[FE]:
    errs: list[FE] = []
    meta = _map(obj.get("metadata"), "metadata", errs)
    name = meta.get("name")
    generate = meta.get("generateName")
    rule = _name_rule(rt)
    if generate:
        prefix = _str(generate)
        masked = prefix[:-1] if prefix.endswith("-") else prefix
        errs.extend(fielderrors.invalid("metadata.generateName", prefix, m) for m in rule(masked))
    if name:
        if not isinstance(name, str):
            errs.append(fielderrors.invalid("metadata.name", name, "must be a string"))
        else:
            errs.extend(fielderrors.invalid("metadata.name", name, m) for m in rule(name))
    elif not generate:
        errs.append(fielderrors.required("metadata.name", "name or generateName is required"))
    if rt.namespaced:
        ns = meta.get("namespace")
        if not ns:
            errs.append(fielderrors.required("metadata.namespace", ""))
        else:
            errs.extend(
                fielderrors.invalid("metadata.namespace", ns, m)
                for m in names.is_dns1123_label(_str(ns))
            )
    elif meta.get("namespace"):
        errs.append(fielderrors.forbidden("metadata.namespace", "not allowed on this type"))
    errs.extend(validate_labels(meta.get("labels"), "metadata.labels"))
    errs.extend(validate_annotations(meta.get("annotations"), "metadata.annotations"))
    return errs


# --- label selectors & network policy ---------------------------------------------------


def validate_label_selector(selector: Any, path: str) -> list[FE]:
    errs: list[FE] = []
    sel = _map(selector, path, errs)
    errs.extend(validate_labels(sel.get("matchLabels"), f"{path}.matchLabels"))
    for rpath, req in _items(sel.get("matchExpressions"), f"{path}.matchExpressions", errs):
        op = req.get("operator")
        values = req.get("values") or []
        if not isinstance(values, list):
            errs.append(fielderrors.invalid(f"{rpath}.values", values, "must be a list"))
            values = []
        if op in ("In", "NotIn"):
            if not values:
                errs.append(
                    fielderrors.required(
                        f"{rpath}.values", "must be specified when `operator` is 'In' or 'NotIn'"
                    )
                )
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.append(
                    fielderrors.forbidden(
                        f"{rpath}.values",
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    )
                )
        else:
            errs.append(
                fielderrors.invalid(f"{rpath}.operator", op, "not a valid selector operator")
            )
        key = _str(req.get("key"))
        errs.extend(
            fielderrors.invalid(f"{rpath}.key", key, m) for m in names.is_qualified_name(key)
        )
        for i, value in enumerate(values):
            errs.extend(
                fielderrors.invalid(f"{rpath}.values[{i}]", value, m)
                for m in names.is_valid_label_value(_str(value))
            )
    return errs


def validate_network_policy_port(port: dict[str, Any], path: str) -> list[FE]:
    errs: list[FE] = []
    protocol = port.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        errs.append(fielderrors.not_supported(f"{path}.protocol", protocol, ("TCP", "UDP", "SCTP")))
    value = port.get("port")
    end = port.get("endPort")
    if end is not None and not _is_int(end):
        errs.append(fielderrors.invalid(f"{path}.endPort", end, "must be an integer"))
        end = None
    if value is None:
        if end is not None:
            errs.append(
                fielderrors.invalid(
                    f"{path}.endPort", end, "may not be specified when `port` is not specified"
                )
            )
    elif _is_int(value):
        errs.extend(
            fielderrors.invalid(f"{path}.port", value, m) for m in names.is_valid_port_num(value)
        )
        if end is not None:
            if end < value:
                errs.append(
                    fielderrors.invalid(
                        f"{path}.endPort", value, "must be greater than or equal to `port`"
                    )
                )
            errs.extend(
                fielderrors.invalid(f"{path}.endPort", end, m) for m in names.is_valid_port_num(end)
            )
    elif isinstance(value, str):
        if end is not None:
            errs.append(
                fielderrors.invalid(
                    f"{path}.endPort", end, "may not be specified when `port` is non-numeric"
                )
            )
        errs.extend(
            fielderrors.invalid(f"{path}.port", value, m) for m in names.is_valid_port_name(value)
        )
    else:
        errs.append(fielderrors.invalid(f"{path}.port", value, "must be an integer or a string"))
    return errs


def validate_ip_block(block: Any, path: str) -> list[FE]:
    errs: list[FE] = []
    ipb = _map(block, path, errs)
    cidr_text = _str(ipb.get("cidr"))
    if not cidr_text:
        return [*errs, fielderrors.required(f"{path}.cidr", "")]
    errs.extend(
        fielderrors.invalid(f"{path}.cidr", cidr_text, m) for m in names.is_valid_cidr(cidr_text)
    )
    cidr = names.parse_cidr(cidr_text)
    if cidr is None:
        return errs
    excepts = ipb.get("except") or []
    if not isinstance(excepts, list):
        return [*errs, fielderrors.invalid(f"{path}.except", excepts, "must be a list")]
    for i, text in enumerate(excepts):
        epath = f"{path}.except[{i}]"
        text = _str(text)
        msgs = names.is_valid_cidr(text)
        errs.extend(fielderrors.invalid(epath, text, m) for m in msgs)
        exc = names.parse_cidr(text)
        if exc is None:
            continue
        inside = exc.version == cidr.version and exc.network_address in cidr
        if not inside or cidr.prefixlen >= exc.prefixlen:
            errs.append(fielderrors.invalid(epath, text, "must be a strict subset of `cidr`"))
    return errs


def validate_network_policy_peer(peer: dict[str, Any], path: str) -> list[FE]:
    errs: list[FE] = []
    count = 0
    if peer.get("podSelector") is not None:
        count += 1
        errs.extend(validate_label_selector(peer["podSelector"], f"{path}.podSelector"))
    if peer.get("namespaceSelector") is not None:
        count += 1
        errs.extend(validate_label_selector(peer["namespaceSelector"], f"{path}.namespaceSelector"))
    if peer.get("ipBlock") is not None:
        count += 1
        errs.extend(validate_ip_block(peer["ipBlock"], f"{path}.ipBlock"))
    if count == 0:
        errs.append(fielderrors.required(path, "must specify a peer"))
    elif count > 1 and peer.get("ipBlock") is not None:
        errs.append(fielderrors.forbidden(path, "may not specify both ipBlock and another peer"))
    return errs


def validate_network_policy_spec(spec_value: Any, path: str = "spec") -> list[FE]:
    errs: list[FE] = []
    spec = _map(spec_value, path, errs)
    if "podSelector" not in spec or spec["podSelector"] is None:
        errs.append(fielderrors.required(f"{path}.podSelector", ""))
    else:
        errs.extend(validate_label_selector(spec["podSelector"], f"{path}.podSelector"))
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for rpath, rule in _items(spec.get(direction), f"{path}.{direction}", errs):
            for ppath, port in _items(rule.get("ports"), f"{rpath}.ports", errs):
                errs.extend(validate_network_policy_port(port, ppath))
            for ppath, peer in _items(rule.get(peers_key), f"{rpath}.{peers_key}", errs):
                errs.extend(validate_network_policy_peer(peer, ppath))
    types = spec.get("policyTypes") or []
    if not isinstance(types, list):
        return [*errs, fielderrors.invalid(f"{path}.policyTypes", types, "must be a list")]
    if len(types) > len(POLICY_TYPES):
        errs.append(
            fielderrors.invalid(
                f"{path}.policyTypes", types, "may not specify more than two policyTypes"
            )
        )
        return errs
    for i, ptype in enumerate(types):
        if ptype not in POLICY_TYPES:
            errs.append(fielderrors.not_supported(f"{path}.policyTypes[{i}]", ptype, POLICY_TYPES))
    return errs


# --- pods ---------------------------------------------------------------------------------


def _validate_container_ports(ports: Any, path: str, seen: set[str]) -> list[FE]:
    errs: list[FE] = []
    for ppath, port in _items(ports, path, errs):
        pname = port.get("name")
        if pname:
            msgs = names.is_valid_port_name(_str(pname))
            errs.extend(fielderrors.invalid(f"{ppath}.name", pname, m) for m in msgs)
            if not msgs and pname in seen:
                errs.append(fielderrors.duplicate(f"{ppath}.name", pname))
            seen.add(_str(pname))
        cport = port.get("containerPort")
        if not cport:
            errs.append(fielderrors.required(f"{ppath}.containerPort", ""))
        elif not _is_int(cport):
            errs.append(fielderrors.invalid(f"{ppath}.containerPort", cport, "must be an integer"))
        else:
            errs.extend(
                fielderrors.invalid(f"{ppath}.containerPort", cport, m)
                for m in names.is_valid_port_num(cport)
            )
        hport = port.get("hostPort")
        if hport:
            if not _is_int(hport):
                errs.append(fielderrors.invalid(f"{ppath}.hostPort", hport, "must be an integer"))
            else:
                errs.extend(
                    fielderrors.invalid(f"{ppath}.hostPort", hport, m)
                    for m in names.is_valid_port_num(hport)
                )
        protocol = port.get("protocol")
        if not protocol:
            errs.append(fielderrors.required(f"{ppath}.protocol", ""))
        elif protocol not in PROTOCOLS:
            errs.append(fielderrors.not_supported(f"{ppath}.protocol", protocol, PROTOCOLS))
    return errs


def _validate_containers(value: Any, path: str, required: bool, names_seen: set[str]) -> list[FE]:
    errs: list[FE] = []
    items = _items(value, path, errs)
    if required and not items and not errs:
        return [fielderrors.required(path, "")]
    port_names: set[str] = set()
    for cpath, container in items:
        cname = container.get("name")
        if not cname:
            errs.append(fielderrors.required(f"{cpath}.name", ""))
        else:
            errs.extend(
                fielderrors.invalid(f"{cpath}.name", cname, m)
                for m in names.is_dns1123_label(_str(cname))
            )
            if cname in names_seen:
                errs.append(fielderrors.duplicate(f"{cpath}.name", cname))
            names_seen.add(_str(cname))
        if not container.get("image"):
            errs.append(fielderrors.required(f"{cpath}.image", ""))
        errs.extend(_validate_container_ports(container.get("ports"), f"{cpath}.ports", port_names))
    return errs


def validate_pod_spec(spec_value: Any, path: str = "spec") -> list[FE]:
    errs: list[FE] = []
    spec = _map(spec_value, path, errs)
    seen: set[str] = set()
    errs.extend(_validate_containers(spec.get("containers"), f"{path}.containers", True, seen))
    errs.extend(
        _validate_containers(spec.get("initContainers"), f"{path}.initContainers", False, seen)
    )
    policy = spec.get("restartPolicy")
    if policy not in ("Always", "OnFailure", "Never"):
        errs.append(
            fielderrors.not_supported(
                f"{path}.restartPolicy", policy, ("Always", "OnFailure", "Never")
            )
        )
    node = spec.get("nodeName")
    if node:
        errs.extend(
            fielderrors.invalid(f"{path}.nodeName", node, m)
            for m in names.is_dns1123_subdomain(_str(node))
        )
    return errs


def _without_images(spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    for key in ("containers", "initContainers"):
        if isinstance(out.get(key), list):
            out[key] = [
                {k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c
                for c in out[key]
            ]
    for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        out.pop(key, None)
    return out


def validate_pod_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    new_spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
    old_spec = old.get("spec") if isinstance(old.get("spec"), dict) else {}
    assert isinstance(new_spec, dict) and isinstance(old_spec, dict)
    if _without_images(new_spec) != _without_images(old_spec):
        return [fielderrors.forbidden("spec", POD_UPDATE_FORBIDDEN)]
    return []


# --- other kinds --------------------------------------------------------------------------


def validate_service_spec(spec_value: Any, path: str = "spec") -> list[FE]:
    errs: list[FE] = []
    spec = _map(spec_value, path, errs)
    stype = spec.get("type")
    types = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
    if stype not in types:
        errs.append(fielderrors.not_supported(f"{path}.type", stype, types))
    ports = _items(spec.get("ports"), f"{path}.ports", errs)
    if not ports and stype != "ExternalName" and spec.get("clusterIP") != "None":
        errs.append(fielderrors.required(f"{path}.ports", ""))
    seen: set[str] = set()
    for ppath, port in ports:
        pname = _str(port.get("name"))
        if len(ports) > 1 and not pname:
            errs.append(fielderrors.required(f"{ppath}.name", ""))
        elif pname:
            errs.extend(
                fielderrors.invalid(f"{ppath}.name", pname, m)
                for m in names.is_dns1123_label(pname)
            )
            if pname in seen:
                errs.append(fielderrors.duplicate(f"{ppath}.name", pname))
            seen.add(pname)
        num = port.get("port")
        if not _is_int(num):
            errs.append(fielderrors.invalid(f"{ppath}.port", num, "must be an integer"))
        else:
            errs.extend(
                fielderrors.invalid(f"{ppath}.port", num, m) for m in names.is_valid_port_num(num)
            )
        protocol = port.get("protocol")
        if protocol not in PROTOCOLS:
            errs.append(fielderrors.not_supported(f"{ppath}.protocol", protocol, PROTOCOLS))
        target = port.get("targetPort")
        if _is_int(target):
            errs.extend(
                fielderrors.invalid(f"{ppath}.targetPort", target, m)
                for m in names.is_valid_port_num(target)
            )
        elif isinstance(target, str):
            errs.extend(
                fielderrors.invalid(f"{ppath}.targetPort", target, m)
                for m in names.is_valid_port_name(target)
            )
    errs.extend(_validate_service_ips(spec, path))
    return errs


def _validate_service_ips(spec: dict[str, Any], path: str) -> list[FE]:
    """ipFamilyPolicy, ipFamilies and clusterIPs agree (ValidateService's dual-stack part)."""
    errs: list[FE] = []
    if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
        return errs
    policy = spec.get("ipFamilyPolicy")
    policies = ("SingleStack", "PreferDualStack", "RequireDualStack")
    if policy is not None and policy not in policies:
        errs.append(fielderrors.not_supported(f"{path}.ipFamilyPolicy", policy, policies))
    families = spec.get("ipFamilies")
    if families is not None:
        if not isinstance(families, list):
            errs.append(fielderrors.invalid(f"{path}.ipFamilies", families, "must be a list"))
            families = []
        for i, family in enumerate(families):
            if family not in ("IPv4", "IPv6"):
                errs.append(
                    fielderrors.not_supported(f"{path}.ipFamilies[{i}]", family, ("IPv4", "IPv6"))
                )
        if len(families) > 2 or len(set(map(str, families))) != len(families):
            errs.append(
                fielderrors.invalid(
                    f"{path}.ipFamilies",
                    families,
                    "may specify no more than one IP for each IP family",
                )
            )
        if policy == "SingleStack" and len(families) > 1:
            errs.append(
                fielderrors.invalid(
                    f"{path}.ipFamilies", families, "must be a single family for SingleStack"
                )
            )
    ips = spec.get("clusterIPs")
    if isinstance(ips, list):
        for i, ip in enumerate(ips):
            if not isinstance(ip, str) or not names.is_valid_ip(ip):
                errs.append(
                    fielderrors.invalid(f"{path}.clusterIPs[{i}]", ip, "must be a valid IP address")
                )
            elif isinstance(families, list) and i < len(families):
                family = "IPv6" if ":" in ip else "IPv4"
                if family != families[i]:
                    errs.append(
                        fielderrors.invalid(
                            f"{path}.clusterIPs[{i}]", ip, f"expected an {families[i]} value"
                        )
                    )
        if ips and spec.get("clusterIP") != ips[0]:
            errs.append(
                fielderrors.invalid(f"{path}.clusterIPs", ips, "first value must match `clusterIP`")
            )
    return errs


def validate_service_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    """A Service's ClusterIP is immutable (except to/from ExternalName)."""
    new_spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
    old_spec = old.get("spec") if isinstance(old.get("spec"), dict) else {}
    assert isinstance(new_spec, dict) and isinstance(old_spec, dict)
    if "ExternalName" in (new_spec.get("type"), old_spec.get("type")):
        return []
    if new_spec.get("clusterIP") != old_spec.get("clusterIP"):
        return [
            fielderrors.invalid(
                "spec.clusterIPs[0]", new_spec.get("clusterIP"), "may not change once set"
            )
        ]
    return []


def validate_endpoint_slice(obj: dict[str, Any]) -> list[FE]:
    errs: list[FE] = []
    family = obj.get("addressType")
    families = ("IPv4", "IPv6", "FQDN")
    if not family:
        errs.append(fielderrors.required("addressType", ""))
    elif family not in families:
        errs.append(fielderrors.not_supported("addressType", family, families))
    for epath, endpoint in _items(obj.get("endpoints"), "endpoints", errs):
        addresses = endpoint.get("addresses")
        if not isinstance(addresses, list) or not addresses:
            errs.append(
                fielderrors.required(f"{epath}.addresses", "must contain at least 1 address")
            )
            continue
        for i, addr in enumerate(addresses):
            if family in ("IPv4", "IPv6"):
                ok = names.is_valid_ip(_str(addr)) and (":" in _str(addr)) == (family == "IPv6")
                if not ok:
                    errs.append(
                        fielderrors.invalid(
                            f"{epath}.addresses[{i}]", addr, f"must be a valid {family} address"
                        )
                    )
    seen: set[str] = set()
    for ppath, port in _items(obj.get("ports"), "ports", errs):
        pname = _str(port.get("name"))
        if pname:
            errs.extend(
                fielderrors.invalid(f"{ppath}.name", pname, m)
                for m in names.is_dns1123_label(pname)
            )
        if pname in seen:
            errs.append(fielderrors.duplicate(f"{ppath}.name", pname))
        seen.add(pname)
        protocol = port.get("protocol")
        if protocol not in PROTOCOLS:
            errs.append(fielderrors.not_supported(f"{ppath}.protocol", protocol, PROTOCOLS))
        num = port.get("port")
        if num is not None:
            if not _is_int(num):
                errs.append(fielderrors.invalid(f"{ppath}.port", num, "must be an integer"))
            else:
                errs.extend(
                    fielderrors.invalid(f"{ppath}.port", num, m)
                    for m in names.is_valid_port_num(num)
                )
    return errs


def validate_event(obj: dict[str, Any]) -> list[FE]:
    """legacyValidateEvent: involvedObject namespace agreement and new-style event fields."""
    errs: list[FE] = []
    involved = _map(obj.get("involvedObject"), "involvedObject", errs)
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    ns = _str(meta.get("namespace"))
    involved_ns = _str(involved.get("namespace"))
    mismatch = fielderrors.invalid(
        "involvedObject.namespace", involved_ns, "does not match event.namespace"
    )
    if not obj.get("eventTime"):
        if involved_ns:
            if ns != involved_ns:
                errs.append(mismatch)
        elif ns not in ("", "default"):
            errs.append(mismatch)
    else:
        if not involved_ns and ns not in ("default", "kube-system"):
            errs.append(mismatch)
        controller = _str(obj.get("reportingComponent"))
        if not controller:
            errs.append(fielderrors.required("reportingComponent", ""))
        else:
            errs.extend(
                fielderrors.invalid("reportingComponent", controller, m)
                for m in names.is_qualified_name(controller)
            )
        if not obj.get("reportingInstance"):
            errs.append(fielderrors.required("reportingInstance", ""))
        if not obj.get("action"):
            errs.append(fielderrors.required("action", ""))
        if not obj.get("reason"):
            errs.append(fielderrors.required("reason", ""))
    return errs


def validate(
    rt: resources.ResourceType, obj: dict[str, Any], old: dict[str, Any] | None = None
) -> list[FE]:
    """All errors for ``obj`` as the registry strategy for ``rt`` would report them."""
    errs = validate_meta(rt, obj)
    if rt is resources.NETWORK_POLICIES:
        errs.extend(validate_network_policy_spec(obj.get("spec")))
    elif rt is resources.PODS:
        errs.extend(validate_pod_spec(obj.get("spec")))
        if old is not None:
            errs.extend(validate_pod_update(obj, old))
    elif rt is resources.SERVICES:
        errs.extend(validate_service_spec(obj.get("spec")))
        if old is not None:
            errs.extend(validate_service_update(obj, old))
    elif rt is resources.ENDPOINT_SLICES:
        errs.extend(validate_endpoint_slice(obj))
        if old is not None and old.get("addressType") != obj.get("addressType"):
            errs.append(
                fielderrors.invalid("addressType", obj.get("addressType"), "field is immutable")
            )
    elif rt is resources.EVENTS:
        errs.extend(validate_event(obj))
    return errs
