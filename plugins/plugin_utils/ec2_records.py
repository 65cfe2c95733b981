# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fields of the compact instance record the ec2 inventory plugin caches (one list per instance).

A module of its own, free of boto3, so that the plugin reads cached records without importing
ec2_scan (and with it boto3), while ec2_scan builds records with the same indexes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

REC_ID = 0
REC_PRIVATE_IP = 1
REC_PUBLIC_IP = 2
REC_PRIVATE_DNS = 3
REC_PUBLIC_DNS = 4
REC_STATE = 5
REC_TYPE = 6
REC_ZONE = 7
REC_TAGS = 8
